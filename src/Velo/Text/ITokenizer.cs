namespace Velo.Text;

/// <summary>Turns text into token ids and back, matching the reference tokenizer of a model family.</summary>
public interface ITokenizer
{
    int VocabSize { get; }

    /// <summary>Special token ids; -1 when the vocabulary has none.</summary>
    int BosId { get; }
    int EosId { get; }
    int EotId { get; }
    int PadId { get; }
    int ClsId { get; }
    int SepId { get; }
    int UnknownId { get; }

    /// <summary>Whether <see cref="Encode(string, bool, bool)"/> with <c>addSpecial</c> puts BOS first / EOS last.</summary>
    bool AddBos { get; }
    bool AddEos { get; }

    /// <summary>The most bytes of UTF-8 input one token can stand for, so a text of N bytes needs at least
    /// N / this many tokens (servers reject overlong prompts before tokenizing them); 0 when no bound is known.</summary>
    int MaxInputBytesPerToken { get; }

    /// <param name="addSpecial">Add the BOS/EOS (CLS/SEP) tokens the model expects around a sequence.</param>
    /// <param name="parseSpecial">Recognise control tokens such as <c>&lt;|im_start|&gt;</c> written in the text;
    /// when false they are tokenized as ordinary text. User-defined added tokens are always recognised.</param>
    int[] Encode(string text, bool addSpecial = true, bool parseSpecial = false);

    /// <summary>Encodes a rendered chat prompt: control tokens are parsed, except where the text of one was marked as
    /// a user's literal text by <see cref="LiteralTextMarker"/>; the marks themselves are dropped.</summary>
    int[] Encode(MarkedPrompt prompt, bool addSpecial = true);

    /// <param name="skipSpecial">Leave out control tokens (BOS, EOS, chat markers) instead of writing their text.</param>
    string Decode(ReadOnlySpan<int> ids, bool skipSpecial = false);

    /// <summary>The bytes the token decodes to; may be part of a UTF-8 character. Empty for control tokens when
    /// <paramref name="skipSpecial"/>.</summary>
    ReadOnlySpan<byte> TokenBytes(int id, bool skipSpecial = false);

    /// <summary>The token's piece exactly as stored in the vocabulary (e.g. <c>▁the</c>, <c>Ġthe</c>, <c>&lt;0x0A&gt;</c>).</summary>
    string TokenText(int id);

    /// <summary>True for tokens that end generation: EOS, EOT, EOM and end-of-turn markers such as <c>&lt;|im_end|&gt;</c>.</summary>
    bool IsEndOfGeneration(int id);
}
