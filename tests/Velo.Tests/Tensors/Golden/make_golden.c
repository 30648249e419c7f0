// Writes the golden files in this folder from llama.cpp's own ggml (libggml-base), to check Velo's Dequantize and
// Quantize against byte for byte. Not part of the build; rerun only to regenerate:
//   cc -O1 -o /tmp/make_golden make_golden.c -L DIR -lggml-base -Wl,-rpath,DIR && /tmp/make_golden
// where DIR holds libggml-base.so (the npm package @node-llama-cpp/linux-x64 ships one: bins/linux-x64).
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint16_t half_bits;
typedef void (*to_float_fn)(const void *src, float *dst, int64_t n);
typedef void (*from_float_fn)(const float *src, void *dst, int64_t n);

void dequantize_row_q4_0(const void *, float *, int64_t);
void dequantize_row_q4_1(const void *, float *, int64_t);
void dequantize_row_q5_0(const void *, float *, int64_t);
void dequantize_row_q5_1(const void *, float *, int64_t);
void dequantize_row_q8_0(const void *, float *, int64_t);
void dequantize_row_q2_K(const void *, float *, int64_t);
void dequantize_row_q3_K(const void *, float *, int64_t);
void dequantize_row_q4_K(const void *, float *, int64_t);
void dequantize_row_q5_K(const void *, float *, int64_t);
void dequantize_row_q6_K(const void *, float *, int64_t);
void quantize_row_q4_0_ref(const float *, void *, int64_t);
void quantize_row_q4_1_ref(const float *, void *, int64_t);
void quantize_row_q5_0_ref(const float *, void *, int64_t);
void quantize_row_q5_1_ref(const float *, void *, int64_t);
void quantize_row_q8_0_ref(const float *, void *, int64_t);
void quantize_row_q2_K_ref(const float *, void *, int64_t);
void quantize_row_q3_K_ref(const float *, void *, int64_t);
void quantize_row_q4_K_ref(const float *, void *, int64_t);
void quantize_row_q5_K_ref(const float *, void *, int64_t);
void quantize_row_q6_K_ref(const float *, void *, int64_t);
void ggml_fp16_to_fp32_row(const half_bits *, float *, int64_t);
void ggml_fp32_to_fp16_row(const float *, half_bits *, int64_t);
void ggml_bf16_to_fp32_row(const half_bits *, float *, int64_t);
void ggml_fp32_to_bf16_row_ref(const float *, half_bits *, int64_t);
half_bits ggml_fp32_to_fp16(float);

static void f16_to_f32(const void *s, float *d, int64_t n) { ggml_fp16_to_fp32_row(s, d, n); }
static void f32_to_f16(const float *s, void *d, int64_t n) { ggml_fp32_to_fp16_row(s, d, n); }
static void bf16_to_f32(const void *s, float *d, int64_t n) { ggml_bf16_to_fp32_row(s, d, n); }
static void f32_to_bf16(const float *s, void *d, int64_t n) { ggml_fp32_to_bf16_row_ref(s, d, n); }

// Byte offsets of the fp16 scale fields in each block, so random blocks get finite scales.
struct type_case {
    const char *name;
    int block_size, block_bytes;
    int half_fields[2];
    to_float_fn to_float;
    from_float_fn from_float;
};

static const struct type_case cases[] = {
    {"f16", 1, 2, {-1, -1}, f16_to_f32, f32_to_f16},
    {"bf16", 1, 2, {-1, -1}, bf16_to_f32, f32_to_bf16},
    {"q4_0", 32, 18, {0, -1}, dequantize_row_q4_0, quantize_row_q4_0_ref},
    {"q4_1", 32, 20, {0, 2}, dequantize_row_q4_1, quantize_row_q4_1_ref},
    {"q5_0", 32, 22, {0, -1}, dequantize_row_q5_0, quantize_row_q5_0_ref},
    {"q5_1", 32, 24, {0, 2}, dequantize_row_q5_1, quantize_row_q5_1_ref},
    {"q8_0", 32, 34, {0, -1}, dequantize_row_q8_0, quantize_row_q8_0_ref},
    {"q2_k", 256, 84, {80, 82}, dequantize_row_q2_K, quantize_row_q2_K_ref},
    {"q3_k", 256, 110, {108, -1}, dequantize_row_q3_K, quantize_row_q3_K_ref},
    {"q4_k", 256, 144, {0, 2}, dequantize_row_q4_K, quantize_row_q4_K_ref},
    {"q5_k", 256, 176, {0, 2}, dequantize_row_q5_K, quantize_row_q5_K_ref},
    {"q6_k", 256, 210, {208, -1}, dequantize_row_q6_K, quantize_row_q6_K_ref},
};

enum { ROW = 256, ROWS = 8, N = ROW * ROWS };

static uint32_t rng = 0x9E3779B9u;
static uint32_t next_u32(void) { rng ^= rng << 13; rng ^= rng >> 17; rng ^= rng << 5; return rng; }
static float uniform(void) { return (next_u32() >> 8) * (1.0f / 16777216.0f); }                  // [0, 1)
static float gaussian(void) { float s = 0; for (int i = 0; i < 12; i++) s += uniform(); return s - 6; }

static void write_file(const char *name, const void *data, size_t bytes) {
    FILE *f = fopen(name, "wb");
    if (!f || fwrite(data, 1, bytes, f) != bytes) { perror(name); exit(1); }
    fclose(f);
}

int main(void) {
    static float input[N];
    for (int i = 0; i < ROW; i++) {
        input[0 * ROW + i] = gaussian();                                  // unit-scale weights
        input[1 * ROW + i] = 0.02f * gaussian();                          // typical trained-weight scale
        input[2 * ROW + i] = gaussian() * (i % 37 == 5 ? 20.0f : 1.0f);   // outliers
        input[3 * ROW + i] = 0.5f + uniform();                            // all positive
        input[4 * ROW + i] = -0.5f - uniform();                           // all negative
        input[5 * ROW + i] = i < 64 ? 0.0f : i < 128 ? 0.25f : i < 192 ? 1e-8f * gaussian() : 1000.0f * gaussian();
        input[6 * ROW + i] = 0.125f * (int)(16 * uniform() - 8);          // on a grid: rounding ties
        input[7 * ROW + i] = 1e-3f * gaussian();
    }
    write_file("input.f32", input, sizeof input);

    static uint8_t bytes[N * 4];
    static float floats[N];
    char name[64];
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const struct type_case *t = &cases[c];
        size_t row_bytes = (size_t)N / t->block_size * t->block_bytes;

        t->from_float(input, bytes, N);
        snprintf(name, sizeof name, "%s.quantized", t->name);
        write_file(name, bytes, row_bytes);

        // Random blocks reach bit patterns a quantizer never writes (negative Q6_K scales, every Q3_K scale code).
        for (size_t i = 0; i < row_bytes; i++) bytes[i] = (uint8_t)(next_u32() >> 24);
        for (size_t b = 0; b < row_bytes / t->block_bytes; b++)
            for (int h = 0; h < 2; h++)
                if (t->half_fields[h] >= 0) {
                    half_bits v = ggml_fp32_to_fp16(4 * uniform() - 2);
                    memcpy(bytes + b * t->block_bytes + t->half_fields[h], &v, 2);
                }
        t->to_float(bytes, floats, N);
        snprintf(name, sizeof name, "%s.random", t->name);
        write_file(name, bytes, row_bytes);
        snprintf(name, sizeof name, "%s.random.f32", t->name);
        write_file(name, floats, sizeof floats);
    }
    return 0;
}
