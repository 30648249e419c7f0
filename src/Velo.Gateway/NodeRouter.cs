using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;

namespace Velo.Gateway;

/// <summary>
/// Picks the node for a request among the healthy nodes serving its model. Prefix affinity places the nodes on a hash
/// ring (<see cref="VirtualNodes"/> points each) and walks it from the hash of the prompt's leading characters, so a
/// conversation whose earlier turns went to a node goes there again while the node set is unchanged, and only the
/// conversations of a node that leaves or joins move. The walk takes the first node under the load bound (its
/// outstanding requests below <see cref="GatewayOptions.LoadFactor"/> times the average, counting this one) that is
/// not saturated; when every node is over the bound or saturated, the one with the fewest outstanding requests.
/// </summary>
public sealed class NodeRouter(GatewayOptions options)
{
    /// <summary>Points per node on the ring: enough that a handful of nodes split the ring evenly.</summary>
    public const int VirtualNodes = 64;

    private int _roundRobin;

    /// <summary>The node to try next for a request, or null when none is left.</summary>
    public GatewayNode? Pick(IReadOnlyList<GatewayNode> candidates, string prefixKey)
    {
        if (candidates.Count == 0) return null;
        return options.Policy switch
        {
            RoutingPolicy.RoundRobin => candidates.OrderBy(n => n.Prefix, StringComparer.Ordinal)
                .ElementAt((int)((uint)Interlocked.Increment(ref _roundRobin) % (uint)candidates.Count)),
            RoutingPolicy.LeastOutstanding => LeastOutstanding(candidates),
            _ => ByPrefix(candidates, prefixKey),
        };
    }

    private GatewayNode ByPrefix(IReadOnlyList<GatewayNode> candidates, string prefixKey)
    {
        int total = candidates.Sum(n => n.Outstanding);
        double bound = Math.Ceiling(options.LoadFactor * (total + 1) / candidates.Count);
        foreach (var node in RingOrder(candidates, Hash(prefixKey)))
            if (node.Outstanding < bound && !node.Saturated) return node;
        var unsaturated = candidates.Where(n => !n.Saturated).ToList();
        return LeastOutstanding(unsaturated.Count > 0 ? unsaturated : candidates);
    }

    private static GatewayNode LeastOutstanding(IReadOnlyList<GatewayNode> candidates) =>
        candidates.MinBy(n => (n.Outstanding, n.QueueLength))!;

    /// <summary>The candidates in the order the ring meets them clockwise from <paramref name="key"/>.</summary>
    public static IEnumerable<GatewayNode> RingOrder(IReadOnlyList<GatewayNode> candidates, ulong key)
    {
        var ring = new List<(ulong Point, GatewayNode Node)>(candidates.Count * VirtualNodes);
        foreach (var node in candidates)
            for (int i = 0; i < VirtualNodes; i++) ring.Add((Hash($"{node.Prefix}#{i}"), node));
        ring.Sort((a, b) => a.Point.CompareTo(b.Point));
        int start = ring.FindIndex(p => p.Point >= key);
        if (start < 0) start = 0;
        var seen = new HashSet<GatewayNode>();
        for (int i = 0; i < ring.Count && seen.Count < candidates.Count; i++)
        {
            var node = ring[(start + i) % ring.Count].Node;
            if (seen.Add(node)) yield return node;
        }
    }

    /// <summary>A hash that is the same in every process, so gateway replicas and restarts agree on placements.</summary>
    public static ulong Hash(string text)
    {
        Span<byte> digest = stackalloc byte[SHA256.HashSizeInBytes];
        SHA256.HashData(Encoding.UTF8.GetBytes(text), digest);
        return BinaryPrimitives.ReadUInt64LittleEndian(digest);
    }
}
