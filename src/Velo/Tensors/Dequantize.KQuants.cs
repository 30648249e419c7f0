namespace Velo.Tensors;

internal static partial class Dequantize
{
    private static unsafe void Q2_K(ReadOnlySpan<BlockQ2_K> blocks, Span<float> dst)
    {
        for (int b = 0; b < blocks.Length; b++)
        {
            BlockQ2_K block = blocks[b];
            float d = (float)block.D, dmin = (float)block.DMin;
            Span<float> y = dst.Slice(b * BlockQ2_K.Elements, BlockQ2_K.Elements);
            for (int i = 0; i < BlockQ2_K.Elements; i++)
            {
                int half = i / 128, within = i % 128;
                int shift = 2 * (within / 32), l = within % 32;
                byte sc = block.Scales[i / 16];
                float dl = d * (sc & 0xF), ml = dmin * (sc >> 4);
                y[i] = dl * ((block.Qs[32 * half + l] >> shift) & 3) - ml;
            }
        }
    }

    private static unsafe void Q3_K(ReadOnlySpan<BlockQ3_K> blocks, Span<float> dst)
    {
        Span<sbyte> scales = stackalloc sbyte[16];
        for (int b = 0; b < blocks.Length; b++)
        {
            BlockQ3_K block = blocks[b];
            float d = (float)block.D;
            block.UnpackScales(scales);
            Span<float> y = dst.Slice(b * BlockQ3_K.Elements, BlockQ3_K.Elements);
            for (int i = 0; i < BlockQ3_K.Elements; i++)
            {
                int half = i / 128, within = i % 128;
                int shift = 2 * (within / 32), l = within % 32;
                int low = (block.Qs[32 * half + l] >> shift) & 3;
                bool highBit = (block.HMask[l] & (1 << (i / 32))) != 0;
                float dl = d * scales[i / 16];
                y[i] = dl * (low - (highBit ? 0 : 4));
            }
        }
    }

    private static unsafe void Q4_K(ReadOnlySpan<BlockQ4_K> blocks, Span<float> dst)
    {
        for (int b = 0; b < blocks.Length; b++)
        {
            BlockQ4_K block = blocks[b];
            float d = (float)block.D, dmin = (float)block.DMin;
            Span<float> y = dst.Slice(b * BlockQ4_K.Elements, BlockQ4_K.Elements);
            for (int group = 0; group < 8; group++)
            {
                KQuantScales.GetScaleMin(group, block.Scales, out byte sc, out byte m);
                float dl = d * sc, ml = dmin * m;
                int qsBase = 32 * (group / 2), shift = 4 * (group % 2);
                for (int l = 0; l < 32; l++)
                    y[32 * group + l] = dl * ((block.Qs[qsBase + l] >> shift) & 0xF) - ml;
            }
        }
    }

    private static unsafe void Q5_K(ReadOnlySpan<BlockQ5_K> blocks, Span<float> dst)
    {
        for (int b = 0; b < blocks.Length; b++)
        {
            BlockQ5_K block = blocks[b];
            float d = (float)block.D, dmin = (float)block.DMin;
            Span<float> y = dst.Slice(b * BlockQ5_K.Elements, BlockQ5_K.Elements);
            for (int group = 0; group < 8; group++)
            {
                KQuantScales.GetScaleMin(group, block.Scales, out byte sc, out byte m);
                float dl = d * sc, ml = dmin * m;
                int qsBase = 32 * (group / 2), shift = 4 * (group % 2);
                for (int l = 0; l < 32; l++)
                {
                    int low = (block.Qs[qsBase + l] >> shift) & 0xF;
                    int high = (block.Qh[l] >> group) & 1;
                    y[32 * group + l] = dl * (low + 16 * high) - ml;
                }
            }
        }
    }

    private static unsafe void Q6_K(ReadOnlySpan<BlockQ6_K> blocks, Span<float> dst)
    {
        for (int b = 0; b < blocks.Length; b++)
        {
            BlockQ6_K block = blocks[b];
            float d = (float)block.D;
            Span<float> y = dst.Slice(b * BlockQ6_K.Elements, BlockQ6_K.Elements);
            for (int i = 0; i < BlockQ6_K.Elements; i++)
                y[i] = d * block.Scales[i / 16] * (block.Quant(i) - 32);
        }
    }
}
