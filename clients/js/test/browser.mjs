// Drives headless Chromium for browser_test.go: one JSON command per line on
// stdin, one JSON answer per line on stdout. Page console errors and
// failures go to stderr, which the Go test logs.
//
//   {"cmd":"open","url":"http://…/?channel=c&since=0-0","blockWebSocket":true}
//   {"cmd":"wait","count":30,"timeoutMs":20000}   → {"ok":true,"state":{…}}
//   {"cmd":"state"}                                → {"ok":true,"state":{…}}
//   {"cmd":"eval","expr":"(async () => …)()"}       → {"ok":true,"value":…}
//   {"cmd":"quit"}
//
// state is the demo page's window.tslmDemo: messages [{id,data}], events,
// transports, errors.
//
// Environment: CHROMIUM (the browser executable, default "chromium").
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "chromium",
  headless: true,
  // Root in a container has no user namespaces for Chromium's sandbox.
  args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
});
let page = null;

function reply(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

async function state() {
  return page.evaluate(() => window.tslmDemo && { ...window.tslmDemo, state: undefined });
}

async function handle(cmd) {
  switch (cmd.cmd) {
    case "open": {
      // One page at a time: the last test's page would go on reconnecting
      // to a gateway that is gone.
      if (page) await page.context().close();
      const context = await browser.newContext();
      page = await context.newPage();
      page.on("console", (m) => {
        if (m.type() === "error" || m.type() === "warning") process.stderr.write(`page console ${m.type()}: ${m.text()}\n`);
      });
      page.on("pageerror", (e) => process.stderr.write(`page error: ${e.message}\n`));
      if (cmd.blockWebSocket) {
        // As a proxy that refuses upgrades looks to a page: the socket
        // cannot be opened at all.
        await page.addInitScript(() => {
          window.WebSocket = function BlockedWebSocket() {
            throw new DOMException("WebSocket blocked by the test", "SecurityError");
          };
        });
      }
      const resp = await page.goto(cmd.url);
      if (!resp || !resp.ok()) throw new Error(`GET ${cmd.url}: ${resp && resp.status()}`);
      await page.waitForFunction(() => window.tslmDemo !== undefined, null, { timeout: 10000 });
      return { ok: true };
    }
    case "wait": {
      try {
        await page.waitForFunction((n) => window.tslmDemo.messages.length >= n, cmd.count, { timeout: cmd.timeoutMs || 20000, polling: 50 });
      } catch (e) {
        return { ok: false, error: String(e.message || e).split("\n")[0], state: await state() };
      }
      return { ok: true, state: await state() };
    }
    case "eval":
      // An expression (often an async IIFE importing /tslm.js), evaluated
      // by DevTools, which the page's Content-Security-Policy allows.
      return { ok: true, value: await page.evaluate(cmd.expr) };
    case "state":
      return { ok: true, state: await state() };
    case "quit":
      await browser.close();
      process.exit(0);
    default:
      throw new Error(`unknown command ${JSON.stringify(cmd.cmd)}`);
  }
}

reply({ ok: true, version: browser.version() });
const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  try {
    reply(await handle(JSON.parse(line)));
  } catch (e) {
    reply({ ok: false, error: String((e && e.message) || e) });
  }
}
// stdin closed: the Go test is gone.
await browser.close();
