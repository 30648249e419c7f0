using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.FileProviders;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Primitives;

namespace Velo.Gateway;

/// <summary>
/// Node membership from an appsettings-style JSON file (<c>--config gateway.json</c>): the addresses in its
/// <c>Velo:Gateway:Nodes</c> array, read with Microsoft.Extensions.Configuration and read again whenever the file
/// changes (<c>reloadOnChange</c>), so nodes are added and removed by editing it. A file that cannot be read at the
/// start is an error; one that later turns unreadable or invalid (an editor half-way through saving it, a typo) is
/// logged and the nodes it listed before are kept.
/// </summary>
public sealed class NodeConfigurationFile : IDisposable
{
    public const string Section = "Velo:Gateway:Nodes";

    private readonly string _path;
    private readonly NodeRegistry _registry;
    private readonly ILogger _logger;
    private readonly PhysicalFileProvider _files;
    private readonly IConfigurationRoot _configuration;
    private readonly IDisposable _subscription;
    private readonly object _gate = new();
    private volatile bool _loaded;
    private Exception? _loadFailure;

    /// <exception cref="ArgumentException">The file is missing, is not valid JSON, or lists something other than node addresses.</exception>
    public NodeConfigurationFile(string path, NodeRegistry registry, ILogger logger)
    {
        _path = Path.GetFullPath(path);
        _registry = registry;
        _logger = logger;
        if (!File.Exists(_path)) throw new ArgumentException($"the gateway's configuration file {path} does not exist");
        _files = new PhysicalFileProvider(Path.GetDirectoryName(_path)!);
        try
        {
            _configuration = new ConfigurationBuilder().AddJsonFile(source =>
            {
                source.FileProvider = _files;
                source.Path = Path.GetFileName(_path);
                source.ReloadOnChange = true;
                // After the start, a failed reload is reported by Reload rather than thrown on the file watcher's thread.
                source.OnLoadException = failure =>
                {
                    if (!_loaded) return;
                    Volatile.Write(ref _loadFailure, failure.Exception);
                    failure.Ignore = true;
                };
            }).Build();
            _registry.SetFileNodes(Read());
        }
        catch (InvalidDataException e)
        {
            _files.Dispose();
            throw new ArgumentException($"{_path}: {e.InnerException?.Message ?? e.Message}");
        }
        catch
        {
            _files.Dispose();
            throw;
        }
        _loaded = true;
        _subscription = ChangeToken.OnChange(_configuration.GetReloadToken, Reload);
    }

    /// <summary>Why the last reload was refused (the nodes listed before are kept); null after one that worked.</summary>
    public string? LastError { get; private set; }

    /// <summary>Reloads that were applied, successfully or not.</summary>
    public int Reloads { get; private set; }

    private List<Uri> Read()
    {
        var section = _configuration.GetSection(Section);
        // An empty array reads as an empty value.
        if (!string.IsNullOrEmpty(section.Value)) throw new ArgumentException($"{_path}: {Section} must be an array of node addresses, not a single string");
        var addresses = new List<Uri>();
        foreach (var entry in section.GetChildren())
        {
            if (entry.Value is not string url)
                throw new ArgumentException($"{_path}: {Section}:{entry.Key} is not a node address (a string such as \"http://10.0.0.5:8080\")");
            try
            {
                addresses.Add(NodeRegistry.ParseNodeAddress(url));
            }
            catch (ArgumentException e)
            {
                throw new ArgumentException($"{_path}: {Section}:{entry.Key}: {e.Message}");
            }
        }
        return addresses;
    }

    private void Reload()
    {
        lock (_gate)
        {
            try
            {
                // A file being replaced may be missing for a moment, and read as empty: that is no reason to drop every node.
                if (Interlocked.Exchange(ref _loadFailure, null) is { } failure)
                    throw new ArgumentException($"{_path} cannot be read: {failure.InnerException?.Message ?? failure.Message}");
                if (!File.Exists(_path)) throw new ArgumentException($"{_path} is gone");
                var (added, removed) = _registry.SetFileNodes(Read());
                LastError = null;
                if (added.Count + removed.Count > 0)
                    _logger.LogInformation("{Path} changed: nodes added {Added}, removed {Removed}", _path,
                        added.Count == 0 ? "none" : string.Join(", ", added), removed.Count == 0 ? "none" : string.Join(", ", removed));
            }
            catch (ArgumentException e)
            {
                LastError = e.Message;
                _logger.LogError("{Error}; the nodes it listed before are kept", e.Message);
            }
            Reloads++;
        }
    }

    public void Dispose()
    {
        _subscription.Dispose();
        (_configuration as IDisposable)?.Dispose();
        _files.Dispose();
    }
}
