using System.Diagnostics;
using System.Text;

namespace Velo.Text;

/// <summary>
/// Encode throughput on one thread, for <c>velo bench</c>-style tools: synthetic English prose and a mix of code,
/// CJK and emoji, both generated deterministically so runs compare. Not a test.
/// </summary>
public static class TokenizerBenchmark
{
    /// <param name="Seconds">Best time among the timed texts: the least disturbed by other work on the machine.</param>
    public readonly record struct Result(string Corpus, int Bytes, int Tokens, double Seconds)
    {
        /// <summary>Megabytes (10^6 bytes of UTF-8 input) per second.</summary>
        public double MegabytesPerSecond => Bytes / 1e6 / Seconds;

        public override string ToString() =>
            $"{Corpus}: {Bytes / 1e6:F2} MB -> {Tokens} tokens, {MegabytesPerSecond:F1} MB/s";
    }

    /// <summary>
    /// Times each corpus on <paramref name="runs"/> texts of <paramref name="bytes"/> bytes after a warm-up.
    /// Every text has its own seed, so the word cache helps only as much as it would on new text of the same kind.
    /// </summary>
    public static IReadOnlyList<Result> Run(ITokenizer tokenizer, int bytes = 1 << 20, int runs = 5) =>
    [
        Measure(tokenizer, "english", seed => EnglishText(bytes, seed), runs),
        Measure(tokenizer, "code+cjk+emoji", seed => MixedText(bytes, seed), runs),
    ];

    public static Result Measure(ITokenizer tokenizer, string corpus, Func<int, string> textForSeed, int runs)
    {
        // Warm up until the JIT has had time to compile the hot loops at full optimization. The warm-up seeds stay
        // clear of the timed ones (Random treats a negative seed as its absolute value).
        var warmUp = Stopwatch.StartNew();
        for (int seed = 1000; seed < 1003 || warmUp.Elapsed.TotalSeconds < 1; seed++)
            tokenizer.Encode(textForSeed(seed), addSpecial: false);
        var seconds = new List<double>();
        int bytes = 0, tokens = 0;
        for (int run = 1; run <= runs; run++)
        {
            string text = textForSeed(run);
            var clock = Stopwatch.StartNew();
            tokens = tokenizer.Encode(text, addSpecial: false).Length;
            seconds.Add(clock.Elapsed.TotalSeconds);
            bytes = Encoding.UTF8.GetByteCount(text);
        }
        return new Result(corpus, bytes, tokens, seconds.Min());
    }

    private static readonly string[] CommonWords =
    (
        "the of and to a in is it you that he was for on are with as his they be at one have this from or had by " +
        "word but what some we can out other were all there when up use your how said an each she which do their " +
        "time if will way about many then them write would like so these her long make thing see him two has look " +
        "more day could go come did number sound no most people my over know water than call first who may down " +
        "side been now find any new work part take get place made live where after back little only round man year " +
        "came show every good me give our under name very through just form sentence great think say help low line " +
        "differ turn cause much mean before move right boy old too same tell does set three want air well also play " +
        "small end put home read hand port large spell add even land here must big high such follow act why ask men " +
        "change went light kind off need house picture try us again animal point mother world near build self earth"
    ).Split(' ');

    /// <summary>Sentences of common words with capitals, punctuation, numbers, and one rare made-up word in twenty.</summary>
    public static string EnglishText(int bytes, int seed)
    {
        var random = new Random(seed);
        var text = new StringBuilder(bytes + 256);
        while (text.Length < bytes)
        {
            int words = random.Next(5, 18);
            for (int i = 0; i < words; i++)
            {
                string word = random.Next(20) == 0 ? MadeUpWord(random)
                    : random.Next(40) == 0 ? random.Next(1, 100000).ToString()
                    : CommonWords[random.Next(CommonWords.Length)];
                if (i == 0) word = char.ToUpperInvariant(word[0]) + word[1..];
                text.Append(word);
                text.Append(i == words - 1 ? "" : random.Next(12) == 0 ? ", " : " ");
            }
            text.Append(random.Next(10) switch { 0 => "? ", 1 => "! ", 2 => ".\n\n", _ => ". " });
        }
        return text.ToString(0, bytes);
    }

    private static string MadeUpWord(Random random)
    {
        const string letters = "abcdefghijklmnopqrstuvwxyz";
        var word = new char[random.Next(3, 11)];
        for (int i = 0; i < word.Length; i++) word[i] = letters[random.Next(letters.Length)];
        return new string(word);
    }

    private static readonly string[] CodeLines =
    [
        "for (int i = 0; i < {0}.Length; i++) {1} += {0}[i] * 0x{2:X};",
        "if ({0} == null) throw new ArgumentNullException(nameof({0}));",
        "    return {0}.Select(x => x.{1}).Where(v => v > {2}).ToList();",
        "def {0}({1}, *args, **kwargs):\n    return [{1}[k] for k in range({2})]",
        "const {0} = await fetch(`/api/{1}?page=${{{2}}}`).then(r => r.json());",
        "#include <{0}.h>\nstatic int {1}_{2}(void *ctx) {{ return -EINVAL; }}",
        "SELECT {0}, COUNT(*) FROM {1} WHERE id > {2} GROUP BY {0};",
    ];

    private static readonly string[] Emoji = ["🚀", "😀", "👍🏽", "🇯🇵", "❤️", "😶‍🌫️", "👩‍💻", "✅", "🎉", "🤖"];

    /// <summary>Code lines with random identifiers, CJK sentences, emoji runs and accented prose, interleaved.</summary>
    public static string MixedText(int bytes, int seed)
    {
        var random = new Random(seed);
        var text = new StringBuilder(bytes);
        int size = 0;
        while (size < bytes)
        {
            var chunk = new StringBuilder();
            switch (random.Next(4))
            {
                case 0:
                    chunk.AppendFormat(CodeLines[random.Next(CodeLines.Length)], Identifier(random), Identifier(random), random.Next(1 << 20));
                    break;
                case 1:
                    for (int i = random.Next(8, 40); i > 0; i--)
                        chunk.Append(random.Next(3) == 0 ? (char)random.Next(0x3041, 0x3097) : (char)random.Next(0x4E00, 0x9FA6));
                    chunk.Append(random.Next(2) == 0 ? "。" : "，");
                    break;
                case 2:
                    for (int i = random.Next(1, 6); i > 0; i--) chunk.Append(Emoji[random.Next(Emoji.Length)]).Append(random.Next(2) == 0 ? " " : "");
                    break;
                default:
                    chunk.Append(random.Next(3) switch
                    {
                        0 => "Über die Brücke gehen Müller und Jürgen; ",
                        1 => "Приветствую, как дела сегодня? ",
                        _ => "Ça coûte 12,50 € — très cher! ",
                    });
                    break;
            }
            chunk.Append(random.Next(3) == 0 ? "\n" : " ");
            string piece = chunk.ToString();
            int pieceBytes = Encoding.UTF8.GetByteCount(piece);
            if (size + pieceBytes > bytes) break;
            text.Append(piece);
            size += pieceBytes;
        }
        return text.ToString();
    }

    private static string Identifier(Random random)
    {
        string[] parts = ["count", "total", "user", "item", "buffer", "index", "value", "node", "request", "cache", "tmp"];
        return parts[random.Next(parts.Length)] + (random.Next(2) == 0 ? parts[random.Next(parts.Length)].ToUpperInvariant()[..1] + parts[random.Next(parts.Length)][1..] : "");
    }
}
