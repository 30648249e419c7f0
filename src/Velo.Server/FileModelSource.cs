using Velo.Formats;
using Velo.Generation;
using Velo.Inference;
using Velo.Models;
using Velo.Models.HuggingFace;
using Velo.Threading;

namespace Velo.Server;

/// <summary>
/// A model file (GGUF, or a Hugging Face folder): a decoder behind its own <see cref="BatchScheduler"/> (the options'
/// parallel sequences, context and cache types) or an encoder behind a <see cref="TextEmbedder"/>, each with its own
/// worker pool of the options' threads. Its memory plan is reserved before anything is allocated. A decoder given a
/// draft model (the server's <c>-md</c>, for its default model) speculates with it as the options say.
/// </summary>
public sealed class FileModelSource(string name, string path, VeloServerOptions options, string? draftPath = null) : ModelSource(name)
{
    private readonly Lazy<ModelKind?> _kind = new(() => Probe(path));

    public override string? Path => path;

    public override ModelKind? Kind => _kind.Value;

    /// <summary>What the file's header says it is; null when it cannot be read, which loading then reports.</summary>
    private static ModelKind? Probe(string path)
    {
        try
        {
            using var file = GgufFile.Open(HuggingFaceModelCache.Resolve(path));
            return ModelRegistry.ReadInfo(file).Output == ModelOutput.Embeddings ? ModelKind.Encoder : ModelKind.Decoder;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            return null;
        }
    }

    public override Task<ServedModel> LoadAsync(ModelLoadContext context, CancellationToken cancellation) =>
        Task.Run(() => Load(context), cancellation);

    private ServedModel Load(ModelLoadContext context)
    {
        var model = ModelRegistry.Load(path);
        if (model.Info.Output == ModelOutput.Embeddings)
        {
            WorkerPool? pool = null;
            TextEmbedder? embedder = null;
            try
            {
                context.Reserve(TextEmbedder.MemoryPlanFor(model).TotalBytes);
                pool = new WorkerPool(options.Threads);
                embedder = new TextEmbedder(model, Text.Tokenizer.FromGguf(model.File.Metadata), pool);
                return new ServedModel(Name, null, new VeloEmbeddingGenerator(embedder, Name), embedder, pool, model);
            }
            catch
            {
                embedder?.Dispose();
                pool?.Dispose();
                model.Dispose();
                throw;
            }
        }
        model.Dispose();
        var language = LanguageModel.Load(path);
        LanguageModel? draft = null;
        WorkerPool? workers = null;
        try
        {
            var schedulerOptions = options.SchedulerOptions(withDraft: draftPath != null);
            draft = draftPath != null ? LanguageModel.Load(draftPath) : null;
            long draftBytes = draft == null ? 0 : BatchScheduler.MemoryPlanFor(draft, schedulerOptions with { Speculation = null }).TotalBytes;
            context.Reserve(BatchScheduler.MemoryPlanFor(language, schedulerOptions).TotalBytes + draftBytes);
            workers = new WorkerPool(options.Threads);
            var scheduler = new BatchScheduler(language, schedulerOptions, workers, draft: draft);
            return new ServedModel(Name, scheduler, null, scheduler, workers, draft, language);
        }
        catch
        {
            workers?.Dispose();
            draft?.Dispose();
            language.Dispose();
            throw;
        }
    }
}
