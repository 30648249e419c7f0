using System.Net;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Yarp.ReverseProxy.Forwarder;

namespace Velo.Gateway;

/// <summary>
/// Forwards a completion or embeddings request to a node with YARP's <see cref="IHttpForwarder"/>, which carries the
/// headers, streams the response (server-sent events flushed as they come) and cancels the node's request when the
/// client disconnects. The gateway reads the body first (routing needs its model and prompt), so it can replay it:
/// a node that fails before answering, or answers 503 (busy), is passed over for the next one. A node's other
/// answers, 4xx included, reach the client as they are.
/// </summary>
public sealed class GatewayProxy : IDisposable
{
    private readonly IHttpForwarder _forwarder;
    private readonly HttpMessageInvoker _client;
    private readonly NodeRegistry _registry;
    private readonly NodeRouter _router;
    private readonly GatewayOptions _options;
    private readonly GatewayMetrics _metrics;
    private readonly ForwarderRequestConfig _config = new()
    {
        // A long prefill sends nothing for a while; a generation's tokens keep the connection active after that.
        ActivityTimeout = TimeSpan.FromMinutes(10),
        Version = HttpVersion.Version11,
        VersionPolicy = HttpVersionPolicy.RequestVersionOrLower,
    };

    public GatewayProxy(IHttpForwarder forwarder, NodeRegistry registry, NodeRouter router, GatewayOptions options, GatewayMetrics metrics)
    {
        _forwarder = forwarder;
        _registry = registry;
        _router = router;
        _options = options;
        _metrics = metrics;
        var sockets = new SocketsHttpHandler
        {
            UseProxy = false,
            AllowAutoRedirect = false,
            AutomaticDecompression = DecompressionMethods.None,
            UseCookies = false,
            ConnectTimeout = TimeSpan.FromSeconds(5),
            // An abandoned response closes its connection at once, so the node stops generating at once.
            MaxResponseDrainSize = 0,
            ActivityHeadersPropagator = null,
        };
        _client = new HttpMessageInvoker(new EventStreamGuard(sockets), disposeHandler: true);
    }

    public async Task ForwardAsync(HttpContext http)
    {
        byte[] body = await ReadBodyAsync(http);
        var routed = RoutedRequest.Parse(body, _options.PrefixChars);
        string model = routed.Model ?? SoleModel();
        var tried = new HashSet<GatewayNode>();
        string? lastFailure = null;
        for (int attempt = 0; attempt < _options.MaxAttempts; attempt++)
        {
            var candidates = _registry.Serving(model).Where(n => !tried.Contains(n)).ToList();
            var node = _router.Pick(candidates, routed.PrefixKey);
            if (node == null) break;
            tried.Add(node);
            if (attempt > 0) Interlocked.Increment(ref node.Retries);
            var transformer = new NodeTransformer(node, mayPassOverBusy: candidates.Count > 1 && attempt + 1 < _options.MaxAttempts);
            http.Request.Body = new MemoryStream(body, writable: false);
            ForwarderError error;
            node.Begin();
            try
            {
                error = await _forwarder.SendAsync(http, node.Prefix, _client, _config, transformer, http.RequestAborted);
            }
            finally
            {
                node.End();
            }
            if (transformer.PassedOverBusy)
            {
                node.BusyUntil = DateTime.UtcNow + _options.BusyBackoff;
                node.CountResponse(503);
                lastFailure = $"{node.Prefix} is busy (503)";
                http.Response.Clear();
                continue;
            }
            if (error == ForwarderError.None)
            {
                node.CountResponse(http.Response.StatusCode);
                return;
            }
            if (http.RequestAborted.IsCancellationRequested) return;
            Interlocked.Increment(ref node.Failures);
            var failure = http.Features.Get<IForwarderErrorFeature>()?.Exception;
            if (error is ForwarderError.Request or ForwarderError.RequestTimedOut && !http.Response.HasStarted)
            {
                // Nothing reached the client: the request goes to the next node, and this one waits for a health check.
                lastFailure = $"{node.Prefix} failed: {failure?.Message ?? error.ToString()}";
                node.State = NodeState.Down;
                node.Error = lastFailure;
                http.Response.Clear();
                continue;
            }
            // YARP has answered 502 (nothing sent yet) or cut the response (a non-streaming body broke mid-way).
            node.CountResponse(http.Response.HasStarted ? 599 : http.Response.StatusCode);
            return;
        }
        throw NoNode(model, lastFailure);
    }

    private GatewayError NoNode(string model, string? lastFailure)
    {
        if (!_registry.Nodes.Any(n => n.Models.ContainsKey(model)))
        {
            string served = string.Join(", ", _registry.Models().Select(m => $"'{m.Id}'"));
            return new GatewayError(404, $"The model '{model}' does not exist; the nodes serve {(served.Length > 0 ? served : "no model yet")}", "model", "model_not_found");
        }
        return new GatewayError(503, lastFailure != null
            ? $"no node could take the request for '{model}': {lastFailure}"
            : $"no healthy node serves '{model}' now: {string.Join("; ", _registry.Nodes.Where(n => n.Models.ContainsKey(model)).Select(n => $"{n.Prefix} {n.State}{(n.Error != null ? ": " + n.Error : "")}"))}",
            code: "no_healthy_node");
    }

    /// <summary>A request without <c>model</c> goes to the one model the nodes serve; with several, it must choose.</summary>
    private string SoleModel()
    {
        var models = _registry.Models().Select(m => m.Id).ToList();
        return models.Count == 1 ? models[0]
            : throw GatewayError.BadRequest($"'model' is required: this gateway serves {string.Join(", ", models.Select(m => $"'{m}'"))}", "model");
    }

    private async Task<byte[]> ReadBodyAsync(HttpContext http)
    {
        long limit = _options.MaxRequestBytes;
        if (http.Request.ContentLength > limit)
            throw new GatewayError(413, $"the request body is {http.Request.ContentLength} bytes; this gateway accepts at most {limit}", code: "request_too_large");
        if (http.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } size) size.MaxRequestBodySize = limit;
        using var buffer = new MemoryStream();
        var chunk = new byte[16 * 1024];
        int read;
        while ((read = await http.Request.Body.ReadAsync(chunk, http.RequestAborted)) > 0)
        {
            if (buffer.Length + read > limit)
                throw new GatewayError(413, $"the request body is over the {limit} bytes this gateway accepts", code: "request_too_large");
            buffer.Write(chunk, 0, read);
        }
        return buffer.ToArray();
    }

    public void Dispose() => _client.Dispose();

    /// <summary>
    /// Headers as YARP copies them, plus two things: the node goes with the request (so a stream that breaks can be
    /// blamed on it), and a 503 is held back when another node can take the request instead.
    /// </summary>
    private sealed class NodeTransformer(GatewayNode node, bool mayPassOverBusy) : HttpTransformer
    {
        public bool PassedOverBusy { get; private set; }

        public override async ValueTask TransformRequestAsync(HttpContext httpContext, HttpRequestMessage proxyRequest, string destinationPrefix,
            CancellationToken cancellationToken)
        {
            await base.TransformRequestAsync(httpContext, proxyRequest, destinationPrefix, cancellationToken);
            proxyRequest.Options.Set(EventStreamGuard.NodeOption, node);
        }

        public override ValueTask<bool> TransformResponseAsync(HttpContext httpContext, HttpResponseMessage? proxyResponse, CancellationToken cancellationToken)
        {
            if (proxyResponse?.StatusCode == HttpStatusCode.ServiceUnavailable && mayPassOverBusy)
            {
                PassedOverBusy = true;
                return ValueTask.FromResult(false);
            }
            return base.TransformResponseAsync(httpContext, proxyResponse, cancellationToken);
        }
    }
}

/// <summary>
/// Ends a node's event stream that breaks mid-way (the node died or its connection dropped) with an OpenAI-style error
/// event, as a node itself ends a stream whose generation failed, instead of a cut connection the client may read as
/// a hang or a truncated answer. A stream the client abandoned just stops.
/// </summary>
internal sealed class EventStreamGuard(HttpMessageHandler inner) : DelegatingHandler(inner)
{
    public static readonly HttpRequestOptionsKey<GatewayNode> NodeOption = new("velo.node");

    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        var response = await base.SendAsync(request, cancellationToken);
        if (response.Content.Headers.ContentType?.MediaType == "text/event-stream" && request.Options.TryGetValue(NodeOption, out var node))
            response.Content = new GuardedContent(response.Content, node);
        return response;
    }

    private sealed class GuardedContent : HttpContent
    {
        private readonly HttpContent _inner;
        private readonly GatewayNode _node;

        public GuardedContent(HttpContent inner, GatewayNode node)
        {
            _inner = inner;
            _node = node;
            foreach (var header in inner.Headers) Headers.TryAddWithoutValidation(header.Key, header.Value);
        }

        protected override async Task<Stream> CreateContentReadStreamAsync() => new GuardedStream(await _inner.ReadAsStreamAsync(), _node);

        protected override async Task<Stream> CreateContentReadStreamAsync(CancellationToken cancellationToken) =>
            new GuardedStream(await _inner.ReadAsStreamAsync(cancellationToken), _node);

        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context)
        {
            await using var source = await CreateContentReadStreamAsync();
            await source.CopyToAsync(stream);
        }

        protected override bool TryComputeLength(out long length)
        {
            length = 0;
            return false;
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing) _inner.Dispose();
            base.Dispose(disposing);
        }
    }

    private sealed class GuardedStream(Stream inner, GatewayNode node) : Stream
    {
        private byte[]? _tail;
        private int _tailOffset;

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            if (_tail == null)
            {
                try
                {
                    return await inner.ReadAsync(buffer, cancellationToken);
                }
                catch (Exception e) when (e is IOException or HttpRequestException && !cancellationToken.IsCancellationRequested)
                {
                    Interlocked.Increment(ref node.StreamErrors);
                    node.State = NodeState.Down;
                    node.Error = $"its stream broke: {e.Message}";
                    _tail = new GatewayError(502, $"the node {node.Prefix} serving this stream failed mid-way: {e.Message}", code: "node_failed").ToEvent();
                }
            }
            int n = Math.Min(buffer.Length, _tail.Length - _tailOffset);
            _tail.AsMemory(_tailOffset, n).CopyTo(buffer);
            _tailOffset += n;
            return n;
        }

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override int Read(byte[] buffer, int offset, int count) => ReadAsync(buffer, offset, count, CancellationToken.None).GetAwaiter().GetResult();

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            if (disposing) inner.Dispose();
            base.Dispose(disposing);
        }
    }
}
