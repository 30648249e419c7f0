using Velo.Generation;

namespace Velo.Server;

/// <summary>
/// A route between sizes (<c>velo serve --route auto=SMALL,LARGE</c>): a model name whose requests a
/// <see cref="CascadeGenerationService"/> answers with the small entry, escalating to the large one when the small
/// one is unsure. Loading it leases both entries from the registry (loading them if need be), so they stay loaded while
/// the route is; it reserves no memory of its own.
/// </summary>
public sealed class CascadeModelSource(string name, string small, string large, CascadeOptions options) : ModelSource(name)
{
    public string Small { get; } = small;
    public string Large { get; } = large;

    public override ModelKind? Kind => ModelKind.Decoder;

    public override async Task<ServedModel> LoadAsync(ModelLoadContext context, CancellationToken cancellation)
    {
        var smallLease = await context.Registry.AcquireAsync(Small, ModelKind.Decoder, cancellation: cancellation);
        ModelLease? largeLease = null;
        try
        {
            largeLease = await context.Registry.AcquireAsync(Large, ModelKind.Decoder, cancellation: cancellation);
            var cascade = new CascadeGenerationService(smallLease.Generator, largeLease.Generator, options with { Name = Name });
            return new ServedModel(Name, cascade, null, largeLease, smallLease);
        }
        catch (ArgumentException e)
        {
            largeLease?.Dispose();
            smallLease.Dispose();
            // Two models that cannot share a route (another vocabulary, another chat template): the operator's error.
            throw new ApiException(500, $"route '{Name}' cannot pair '{Small}' with '{Large}': {e.Message}", code: "route_invalid");
        }
        catch
        {
            largeLease?.Dispose();
            smallLease.Dispose();
            throw;
        }
    }
}
