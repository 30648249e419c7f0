// Runs a GGUF model through llama.cpp's own libllama, to cross-check Velo's files and figures against it. Not part
// of the build; see README.md beside it. The context parameters are set by offset into the struct returned by
// llama_context_default_params(), found by dumping the defaults of the library this was written against
// (npm @node-llama-cpp/linux-x64 3.22.1): check them before using another build.
//   cc -O1 -o /tmp/llama_crosscheck llama_crosscheck.c -L DIR -l:libllama.v0.5.0.so -l:libggml.v0.5.0.so -lm -Wl,-rpath,DIR
// NuGet LLamaSharp.Backend.Cpu 0.30.0 (DIR = ~/.nuget/packages/llamasharp.backend.cpu/0.30.0/LLamaSharpRuntimes/linux-x64/native/avx2)
// puts the thread counts and flash_attn_type one word earlier:
//   cc -O1 -o /tmp/llama_crosscheck llama_crosscheck.c -DLIBRARY_DIR='"DIR"' -DTHREADS_AT=6 -DFLASH_AT=12 -L DIR -lllama -lggml -lm -Wl,-rpath,DIR
//   /tmp/llama_crosscheck MODEL KV_TYPE FLASH ppl TEXT N_CTX      (KV_TYPE: 0 = F32, 1 = F16; FLASH: -1 auto, 0 off, 1 on)
//   /tmp/llama_crosscheck MODEL KV_TYPE FLASH logits OUT.f32 ID...  (the logits of every position, float32 rows)
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef THREADS_AT
#define THREADS_AT 7 // word of n_threads (n_threads_batch follows) in llama_context_params
#endif
#ifndef FLASH_AT
#define FLASH_AT 13  // word of flash_attn_type
#endif
#ifndef LIBRARY_DIR
#define LIBRARY_DIR "/tmp/nlc/package/bins/linux-x64" // where the CPU backends (libggml-cpu-*.so) are
#endif
typedef struct { _Alignas(8) unsigned char b[1024]; } params_t;
typedef struct {
    int32_t n_tokens; int32_t *token; float *embd; int32_t *pos; int32_t *n_seq_id; int32_t **seq_id; int8_t *logits;
} llama_batch;
void llama_backend_init(void);
void ggml_backend_load_all_from_path(const char *);
params_t llama_context_default_params(void);
params_t llama_model_default_params(void);
void *llama_model_load_from_file(const char *, params_t);
void *llama_init_from_model(void *, params_t);
const void *llama_model_get_vocab(const void *);
int32_t llama_vocab_n_tokens(const void *);
int32_t llama_vocab_bos(const void *);
int32_t llama_tokenize(const void *, const char *, int32_t, int32_t *, int32_t, _Bool, _Bool);
llama_batch llama_batch_init(int32_t, int32_t, int32_t);
int32_t llama_decode(void *, llama_batch);
float *llama_get_logits_ith(void *, int32_t);
void *llama_get_memory(void *);
void llama_memory_clear(void *, _Bool);

static void *ctx; static llama_batch batch; static int n_vocab;

static void eval(const int32_t *tokens, int n, int first_pos) {
    batch.n_tokens = n;
    for (int i = 0; i < n; i++) {
        batch.token[i] = tokens[i]; batch.pos[i] = first_pos + i; batch.n_seq_id[i] = 1; batch.seq_id[i][0] = 0; batch.logits[i] = 1;
    }
    if (llama_decode(ctx, batch) != 0) { fprintf(stderr, "decode failed\n"); exit(1); }
}

int main(int argc, char **argv) {
    if (argc < 6) { fprintf(stderr, "xcheck MODEL KV_TYPE(0 f32, 1 f16) FLASH(-1,0,1) ppl TEXT N_CTX | logits OUT ID...\n"); return 2; }
    llama_backend_init();
    ggml_backend_load_all_from_path(LIBRARY_DIR);
    void *model = llama_model_load_from_file(argv[1], llama_model_default_params());
    if (!model) { fprintf(stderr, "load failed\n"); return 1; }
    const void *vocab = llama_model_get_vocab(model);
    n_vocab = llama_vocab_n_tokens(vocab);
    int n_ctx = strcmp(argv[4], "ppl") == 0 ? atoi(argv[6]) : 512;
    params_t cp = llama_context_default_params();
    uint32_t *u = (uint32_t *)cp.b;
    u[0] = n_ctx; u[1] = n_ctx; u[2] = n_ctx;       // n_ctx, n_batch, n_ubatch
    u[THREADS_AT] = 2; u[THREADS_AT + 1] = 2;        // n_threads, n_threads_batch
    ((int32_t *)cp.b)[FLASH_AT] = atoi(argv[3]);     // flash_attn_type
    u[26] = u[27] = atoi(argv[2]);                   // type_k, type_v
    ctx = llama_init_from_model(model, cp);
    if (!ctx) { fprintf(stderr, "context failed\n"); return 1; }
    batch = llama_batch_init(n_ctx, 0, 1);

    if (strcmp(argv[4], "ppl") == 0) {
        FILE *f = fopen(argv[5], "rb"); fseek(f, 0, SEEK_END); long len = ftell(f); fseek(f, 0, SEEK_SET);
        char *text = malloc(len + 1); fread(text, 1, len, f); text[len] = 0; fclose(f);
        int32_t *tokens = malloc(sizeof(int32_t) * (len + 16));
        int n_tokens = llama_tokenize(vocab, text, (int32_t)len, tokens, (int32_t)len + 16, 1, 0);
        int n_chunk = n_tokens / n_ctx, first = n_ctx / 2;
        fprintf(stderr, "%d tokens, %d chunks\n", n_tokens, n_chunk);
        double nll = 0; int count = 0;
        for (int c = 0; c < n_chunk; c++) {
            llama_memory_clear(llama_get_memory(ctx), 1);
            int32_t saved = tokens[c * n_ctx];
            tokens[c * n_ctx] = llama_vocab_bos(vocab);
            eval(tokens + c * n_ctx, n_ctx, 0);
            tokens[c * n_ctx] = saved;
            for (int j = first; j < n_ctx - 1; j++) {
                const float *l = llama_get_logits_ith(ctx, j);
                float max = l[0]; for (int i = 1; i < n_vocab; i++) if (l[i] > max) max = l[i];
                double sum = 0; for (int i = 0; i < n_vocab; i++) sum += expf(l[i] - max);
                nll += -(l[tokens[c * n_ctx + j + 1]] - max - log(sum)); count++;
            }
            printf("[%d]%.4f,", c + 1, exp(nll / count)); fflush(stdout);
        }
        printf("\nPPL = %.4f\n", exp(nll / count));
    } else {
        int n = argc - 6;
        int32_t *ids = malloc(sizeof(int32_t) * n);
        for (int i = 0; i < n; i++) ids[i] = atoi(argv[6 + i]);
        eval(ids, n, 0);
        FILE *out = fopen(argv[5], "wb");
        for (int i = 0; i < n; i++) fwrite(llama_get_logits_ith(ctx, i), sizeof(float), n_vocab, out);
        fclose(out);
        fprintf(stderr, "wrote %d x %d logits\n", n, n_vocab);
    }
    return 0;
}
