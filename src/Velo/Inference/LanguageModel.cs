using Velo.Formats;
using Velo.Models;
using Velo.Text;

namespace Velo.Inference;

/// <summary>A loaded decoder model with its tokenizer: what a user means by "the model file".</summary>
public sealed class LanguageModel : IDisposable
{
    private LanguageModel(string path, IModel model, TokenizerBase tokenizer, TimeSpan loadTime)
    {
        Path = path;
        Model = model;
        Tokenizer = tokenizer;
        LoadTime = loadTime;
    }

    public string Path { get; }
    public IModel Model { get; }
    public TokenizerBase Tokenizer { get; }
    public TimeSpan LoadTime { get; }
    public ModelInfo Info => Model.Info;
    public GgufMetadata Metadata => Model.File.Metadata;

    /// <summary>The model's own Jinja chat template, if its file has one.</summary>
    public string? ChatTemplate => Metadata.GetString("tokenizer.chat_template");

    public string Name => Metadata.GetString("general.name") ?? System.IO.Path.GetFileNameWithoutExtension(Path);

    public static LanguageModel Load(string path) => Load(path, ModelRegistry.Load);

    /// <summary>The model at <paramref name="path"/> as <paramref name="loadModel"/> loads it (split across a pipeline's
    /// stages, for one), with the tokenizer of its file.</summary>
    public static LanguageModel Load(string path, Func<string, IModel> loadModel)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var model = loadModel(path);
        try
        {
            if (model.Info.Output != ModelOutput.Logits)
                throw new NotSupportedException($"{path}: a {model.Info.Architecture} model is an encoder: it outputs embeddings, not next-token logits (use velo embed)");
            var tokenizer = Text.Tokenizer.FromData(GgufTokenizerMetadata.Read(model.File.Metadata));
            if (tokenizer.VocabSize > model.Info.VocabSize)
                throw new GgufFormatException($"{path}: the tokenizer has {tokenizer.VocabSize} tokens but the model only {model.Info.VocabSize} embeddings");
            return new LanguageModel(path, model, tokenizer, clock.Elapsed);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    public void Dispose() => Model.Dispose();
}
