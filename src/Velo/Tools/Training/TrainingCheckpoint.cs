using System.Runtime.InteropServices;

namespace Velo.Tools.Training;

/// <summary>
/// A training run's state in one file, <c>DIR/checkpoint.bin</c>: the step, the student's shape, its parameters, the
/// optimizer's moments and the training sequences, so <c>--resume</c> continues exactly where the run stopped.
/// Written to a temporary file and renamed, so a crash mid-write leaves the previous checkpoint whole.
/// </summary>
public static class TrainingCheckpoint
{
    private const uint Magic = 0x4B435456; // "VTCK" read as a little-endian uint32
    private const uint Version = 1;

    public static string PathIn(string directory) => Path.Combine(directory, "checkpoint.bin");

    public static void Save(string directory, Distiller distiller)
    {
        Directory.CreateDirectory(directory);
        string path = PathIn(directory);
        string temporary = path + ".partial";
        using (var w = new BinaryWriter(File.Create(temporary)))
        {
            w.Write(Magic);
            w.Write(Version);
            WriteShape(w, distiller.Optimizer.Layout.Shape);
            w.Write(distiller.Step);
            w.Write(distiller.Optimizer.Updates);
            w.Write(distiller.Sequences.Count);
            w.Write(distiller.Sequences[0].Length);
            foreach (var sequence in distiller.Sequences) w.Write(MemoryMarshal.AsBytes(sequence.AsSpan()));
            w.Write(distiller.Parameters.Length);
            w.Write(MemoryMarshal.AsBytes(distiller.Parameters.AsSpan()));
            w.Write(MemoryMarshal.AsBytes(distiller.Optimizer.FirstMoment.AsSpan()));
            w.Write(MemoryMarshal.AsBytes(distiller.Optimizer.SecondMoment.AsSpan()));
        }
        File.Move(temporary, path, overwrite: true);
    }

    /// <summary>What a checkpoint holds.</summary>
    public sealed record State(int Step, int Updates, List<int[]> Sequences, float[] Parameters, float[] FirstMoment, float[] SecondMoment);

    /// <summary>Reads a checkpoint written for a student of <paramref name="shape"/>.</summary>
    public static State Load(string directory, DecoderShape shape)
    {
        string path = PathIn(directory);
        if (!File.Exists(path)) throw new FileNotFoundException($"--resume: there is no checkpoint at {path}");
        using var r = new BinaryReader(File.OpenRead(path));
        try
        {
            if (r.ReadUInt32() != Magic || r.ReadUInt32() != Version) throw new InvalidDataException($"{path} is not a Velo training checkpoint of version {Version}");
            var saved = ReadShape(r);
            if (saved != shape) throw new InvalidDataException($"{path} was written for a student of shape {saved}, not {shape}");
            int step = r.ReadInt32(), updates = r.ReadInt32(), count = r.ReadInt32(), length = r.ReadInt32();
            long remaining = r.BaseStream.Length - r.BaseStream.Position;
            if (step < 0 || updates < 0 || count <= 0 || length < 2 || (long)count * length * 4 > remaining)
                throw new InvalidDataException($"{path} is damaged: step {step}, {count} sequences of {length} tokens");
            var sequences = new List<int[]>(count);
            for (int i = 0; i < count; i++)
            {
                var sequence = new int[length];
                r.BaseStream.ReadExactly(MemoryMarshal.AsBytes(sequence.AsSpan()));
                if (sequence.Any(t => (uint)t >= (uint)shape.VocabSize)) throw new InvalidDataException($"{path} is damaged: a token lies outside the vocabulary");
                sequences.Add(sequence);
            }
            int parameters = r.ReadInt32();
            if (parameters != new ParameterLayout(shape).Count || (long)parameters * 12 > r.BaseStream.Length - r.BaseStream.Position)
                throw new InvalidDataException($"{path} is damaged: {parameters} parameters");
            float[] Read()
            {
                var values = new float[parameters];
                r.BaseStream.ReadExactly(MemoryMarshal.AsBytes(values.AsSpan()));
                return values;
            }
            return new State(step, updates, sequences, Read(), Read(), Read());
        }
        catch (EndOfStreamException)
        {
            throw new InvalidDataException($"{path} is truncated");
        }
    }

    private static void WriteShape(BinaryWriter w, DecoderShape s)
    {
        foreach (int v in new[] { s.Dim, s.Layers, s.Heads, s.KvHeads, s.HeadDim, s.FfnDim, s.VocabSize }) w.Write(v);
        w.Write(s.NormEpsilon);
        w.Write(s.RopeBase);
        w.Write(s.TiedOutput);
    }

    private static DecoderShape ReadShape(BinaryReader r) =>
        new(r.ReadInt32(), r.ReadInt32(), r.ReadInt32(), r.ReadInt32(), r.ReadInt32(), r.ReadInt32(), r.ReadInt32(), r.ReadSingle(), r.ReadSingle(), r.ReadBoolean());
}
