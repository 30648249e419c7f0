using System.Text.Json;
using Microsoft.Playwright;

namespace Velo.Tests.Server;

/// <summary>Where a Chromium to drive is: <c>VELO_CHROMIUM</c>, else Debian's <c>chromium</c> package.</summary>
public static class Chromium
{
    public static string? Path { get; } = Find();

    private static string? Find()
    {
        if (Environment.GetEnvironmentVariable("VELO_CHROMIUM") is { Length: > 0 } configured) return File.Exists(configured) ? configured : null;
        return new[] { "/usr/bin/chromium", "/usr/bin/chromium-browser" }.FirstOrDefault(File.Exists);
    }
}

/// <summary>A test that drives a real browser; skipped, saying why, where no Chromium is installed.</summary>
public sealed class ChromiumFactAttribute : FactAttribute
{
    public ChromiumFactAttribute()
    {
        if (Chromium.Path == null)
            Skip = "no Chromium binary: install Debian's chromium package (apt-get install -y chromium) or set VELO_CHROMIUM to one";
    }
}

/// <summary>One headless Chromium, started once for the class.</summary>
public sealed class BrowserFixture : IAsyncLifetime
{
    private IPlaywright? _playwright;

    public IBrowser Browser { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        if (Chromium.Path == null) return;
        // A loaded machine (CI runs tests in parallel) makes the page slower than Playwright's 5 s default expects.
        Assertions.SetDefaultExpectTimeout(30_000);
        _playwright = await Playwright.CreateAsync();
        Browser = await _playwright.Chromium.LaunchAsync(new BrowserTypeLaunchOptions { ExecutablePath = Chromium.Path, Headless = true });
    }

    public async Task DisposeAsync()
    {
        if (_playwright == null) return;
        await Browser.DisposeAsync();
        _playwright.Dispose();
    }
}

/// <summary>
/// The chat page at <c>/</c> of the server as a person uses it, in headless Chromium: ask, watch the answer stream,
/// stop it. Set <c>VELO_CHAT_SCREENSHOT</c> to a .png path to keep a picture of the page mid-answer.
/// </summary>
public sealed class ChatPageTests(BrowserFixture browser) : IClassFixture<BrowserFixture>
{
    private async Task<IPage> OpenAsync(TestServer server)
    {
        var context = await browser.Browser.NewContextAsync(new BrowserNewContextOptions { ViewportSize = new ViewportSize { Width = 1000, Height = 700 } });
        context.SetDefaultTimeout(30_000);
        var page = await context.NewPageAsync();
        await page.GotoAsync(server.Address.ToString());
        return page;
    }

    [ChromiumFact]
    public async Task QuestionStreamsAnAnswerThatStopStops()
    {
        using var server = new TestServer(parallel: 1);
        var page = await OpenAsync(server);
        var errors = new List<string>();
        page.PageError += (_, error) => errors.Add(error);
        await Assertions.Expect(page.Locator("#model-name")).ToHaveTextAsync(TestServer.ModelId);
        Assert.True(await page.Locator("#model-picker").IsHiddenAsync(), "one model: no picker");

        // stories260K writes faster than anyone reads: a slow link keeps the answer streaming long enough to stop it.
        var cdp = await page.Context.NewCDPSessionAsync(page);
        await cdp.SendAsync("Network.enable");
        await cdp.SendAsync("Network.emulateNetworkConditions", new Dictionary<string, object>
        {
            ["offline"] = false, ["latency"] = 0, ["downloadThroughput"] = 1500, ["uploadThroughput"] = -1,
        });

        await page.Locator("#settings-toggle").ClickAsync();
        await page.Locator("#system").FillAsync("You tell short stories.");
        await page.Locator("#temperature").FillAsync("0");
        await page.Locator("#max-tokens").FillAsync("400");
        await page.Locator("#settings-toggle").ClickAsync();
        var sent = page.WaitForRequestAsync("**/v1/chat/completions");
        await page.Locator("#prompt").FillAsync("Tell me a story about a cat.");
        await page.Locator("#prompt").PressAsync("Enter");

        var request = JsonDocument.Parse((await sent).PostData!).RootElement;
        Assert.True(request.GetProperty("stream").GetBoolean());
        Assert.Equal("system", request.GetProperty("messages")[0].GetProperty("role").GetString());
        Assert.Equal(0, request.GetProperty("temperature").GetDouble());
        Assert.Equal(400, request.GetProperty("max_tokens").GetInt32());

        var answer = page.Locator(".message.assistant .body");
        await Assertions.Expect(page.Locator(".message.user")).ToHaveTextAsync("Tell me a story about a cat.");
        // Streamed: some words are there while the answer is still coming, with the speed below.
        await page.WaitForFunctionAsync("() => (document.querySelector('.message.assistant.streaming .body')?.textContent ?? '').split(' ').length > 8");
        await Assertions.Expect(page.Locator("#status")).ToContainTextAsync("tokens/s");
        Assert.True(await page.Locator("#stop").IsVisibleAsync());
        if (Environment.GetEnvironmentVariable("VELO_CHAT_SCREENSHOT") is { Length: > 0 } screenshot)
            await page.ScreenshotAsync(new PageScreenshotOptions { Path = screenshot });

        await page.Locator("#stop").ClickAsync();
        await Assertions.Expect(page.Locator("#status")).ToContainTextAsync("stopped");
        await Assertions.Expect(page.Locator("#send")).ToBeVisibleAsync();
        Assert.True(await page.Locator("#stop").IsHiddenAsync());
        Assert.Equal(0, await page.Locator(".message.streaming").CountAsync());
        string stopped = await answer.InnerTextAsync();
        Assert.False(string.IsNullOrWhiteSpace(stopped));
        await page.WaitForTimeoutAsync(500);
        Assert.Equal(stopped, await answer.InnerTextAsync());
        Assert.Empty(errors);
    }

    /// <summary>Model output is shown, never run: markup comes out as text, only http(s) links are links.</summary>
    [ChromiumFact]
    public async Task MarkdownRendersCodeAndFormattingAndEscapesHtml()
    {
        using var server = new TestServer(parallel: 1);
        var page = await OpenAsync(server);
        string html = await page.EvaluateAsync<string>("""
            text => {
              const host = document.createElement('div');
              host.append(VeloMarkdown.render(text));
              return host.innerHTML;
            }
            """, "# Title\n**bold** and *it* and `x<y`\n\n```js\nif (a < b) alert(1)\n```\n- one\n- two\n\n" +
                 "<img src=x onerror=alert(1)> <script>alert(2)</script> [ok](https://example.com) [bad](javascript:alert(3))");
        Assert.Contains("<h3>Title</h3>", html);
        Assert.Contains("<strong>bold</strong>", html);
        Assert.Contains("<em>it</em>", html);
        Assert.Contains("<code>x&lt;y</code>", html);
        Assert.Contains("<pre data-language=\"js\"><code class=\"language-js\">if (a &lt; b) alert(1)</code></pre>", html);
        Assert.Contains("<ul><li>one</li><li>two</li></ul>", html);
        Assert.Contains("&lt;img src=x onerror=alert(1)&gt; &lt;script&gt;alert(2)&lt;/script&gt;", html);
        Assert.Contains("<a href=\"https://example.com/\" rel=\"noopener noreferrer nofollow\" target=\"_blank\">ok</a>", html);
        Assert.Contains("[bad](javascript:alert(3))", html);
        Assert.DoesNotContain("<img", html);
        Assert.DoesNotContain("<script", html);
    }

    [ChromiumFact]
    public async Task KeyFieldAppearsWhenTheServerWantsOneAndSeveralModelsGetAPicker()
    {
        using var server = new TestServer(parallel: 1, apiKey: "sesame");
        var page = await OpenAsync(server);
        await Assertions.Expect(page.Locator("#api-key-field")).ToBeVisibleAsync();
        await Assertions.Expect(page.Locator("#status")).ToContainTextAsync("needs an API key");
        await page.Locator("#api-key").FillAsync("sesame");
        await page.Locator("#api-key").DispatchEventAsync("change");
        await Assertions.Expect(page.Locator("#model-name")).ToHaveTextAsync(TestServer.ModelId);

        // Two models listed: the picker appears and the request names the one chosen.
        await page.RouteAsync("**/v1/models", route => route.FulfillAsync(new RouteFulfillOptions
        {
            ContentType = "application/json",
            Body = $$"""{"object":"list","data":[{"id":"other","object":"model"},{"id":"{{TestServer.ModelId}}","object":"model"}]}""",
        }));
        await page.Locator("#api-key").DispatchEventAsync("change");
        await Assertions.Expect(page.Locator("#model-picker")).ToBeVisibleAsync();
        await page.Locator("#model").SelectOptionAsync(TestServer.ModelId);
        await page.Locator("#max-tokens").FillAsync("16");
        var sent = page.WaitForRequestAsync("**/v1/chat/completions");
        await page.Locator("#prompt").FillAsync("Hi");
        await page.Locator("#send").ClickAsync();
        var request = await sent;
        Assert.Equal(TestServer.ModelId, JsonDocument.Parse(request.PostData!).RootElement.GetProperty("model").GetString());
        Assert.Equal("Bearer sesame", request.Headers["authorization"]);
        await Assertions.Expect(page.Locator("#send")).ToBeVisibleAsync();
        await Assertions.Expect(page.Locator(".message.assistant .body")).Not.ToBeEmptyAsync();
    }
}
