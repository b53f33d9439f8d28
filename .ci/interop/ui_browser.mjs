// Drives Debian's Chromium through custody's web page (see ui.sh): sign in with the OIDC
// provider, find the CI run, open a call, verify its receipt in the browser (and see a
// tampered one fail), approve the held call, look at the log's health. Screenshots go to DIR.
//
// usage: node ui_browser.mjs CHROMIUM GATEWAY_URL VERIFIER_KEY DIR
import { chromium } from "playwright-core";

const [executablePath, gateway, verifierKey, shots] = process.argv.slice(2);
const browser = await chromium.launch({ executablePath, args: ["--no-sandbox"] });
const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
// The page must not load anything from elsewhere (only the sign-in navigates to the provider),
// and no script error may happen.
const offsite = [];
const errors = [];
page.on("request", (r) => {
  if (r.resourceType() !== "document" && !r.url().startsWith(gateway)) offsite.push(r.url());
});
page.on("pageerror", (e) => errors.push(String(e)));
page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });

function step(what) { console.log(`ui: ${what}`); }
async function expectText(locator, text, what) {
  await locator.filter({ hasText: text }).first().waitFor({ timeout: 10000 }).catch(async () => {
    throw new Error(`${what}: no "${text}" on ${page.url()}:\n${(await page.content()).slice(0, 3000)}`);
  });
}

try {
  step("sign in with the organisation's provider");
  await page.goto(`${gateway}/ui/runs`);
  await page.waitForURL(/\/ui\/login/);
  await page.screenshot({ path: `${shots}/sign-in.png` });
  await page.getByRole("link", { name: /Sign in with/ }).click();
  await page.waitForURL(/\/ui\/runs/);
  await expectText(page.locator("header"), "ines@acme.example", "signed in");

  step("find the run");
  await page.getByLabel("Repository").fill("acme/api");
  await page.getByRole("button", { name: "Search" }).click();
  await page.waitForURL(/repository=acme%2Fapi/);
  const run = page.getByRole("link", { name: /9134577181/ });
  await run.waitFor();
  await page.screenshot({ path: `${shots}/runs.png` });
  await run.click();
  await page.waitForURL(/\/ui\/runs\/[0-9a-f]+$/);

  step("open a call");
  const call = page.locator("details", { has: page.locator("summary", { hasText: "tools/call" }) }).filter({ hasText: "echo" }).first();
  await call.locator("summary").first().click();
  await expectText(call, "hello through custody", "the call's request");
  await page.screenshot({ path: `${shots}/timeline.png`, fullPage: false });

  step("verify its receipt in the browser");
  const entryLink = call.locator("section.entry h3 a").first();
  const index = await entryLink.textContent();
  await entryLink.click();
  await page.waitForURL(new RegExp(`/ui/entries/${index}$`));
  for (let i = 0; i < 50 && !(await page.locator("#verify").count()); i++) {
    await page.waitForTimeout(200);
    await page.reload();
  }
  await page.getByLabel(/Verifier key/).fill(verifierKey);
  await page.getByRole("button", { name: /Verify entry/ }).click();
  await expectText(page.locator("#verify-result"), `Verified: entry ${index}`, "the in-browser check");
  await expectText(page.locator("#verify-result dl"), "tools/call", "the decoded entry");
  await expectText(page.locator("#verify-result"), "the message matches its commitment", "the payload's check");
  await expectText(page.locator("#verify-result pre"), "hello through custody", "the verified message");
  await page.screenshot({ path: `${shots}/verify.png`, fullPage: true });
  // The same check on bytes the server changed fails.
  await page.evaluate(() => {
    const el = document.getElementById("entry-bytes");
    const b = atob(el.textContent.trim());
    const changed = b.slice(0, 40) + String.fromCharCode(b.charCodeAt(40) ^ 1) + b.slice(41);
    el.textContent = btoa(changed);
  });
  await page.getByRole("button", { name: /Verify entry/ }).click();
  await expectText(page.locator("#verify-result"), "Not verified", "a tampered entry");
  // A message changed where payloads are stored fails against its commitment.
  await page.reload();
  await page.getByLabel(/Verifier key/).fill(verifierKey);
  await page.evaluate(() => {
    const el = document.querySelector("pre.payload-bytes[data-slot='1']");
    el.textContent = btoa(atob(el.textContent.trim()).replace("hello", "HELLO"));
  });
  await page.getByRole("button", { name: /Verify entry/ }).click();
  await expectText(page.locator("#verify-result"), "does not match its commitment", "a changed payload");
  // And a key other than the log's is refused.
  await page.reload();
  await page.getByLabel(/Verifier key/).fill("custody.local/other+00000000+AQ" + "A".repeat(42) + "=");
  await page.getByRole("button", { name: /Verify entry/ }).click();
  await expectText(page.locator("#verify-result"), "Not verified", "another key");

  step("approve the held call");
  await page.getByRole("link", { name: "Approvals" }).click();
  for (let i = 0; i < 50 && !(await page.getByRole("button", { name: "Approve" }).count()); i++) {
    await page.waitForTimeout(200);
    await page.reload();
  }
  await expectText(page.locator("article"), "2.0.1", "the held call's arguments");
  await page.getByLabel(/Reason to approve/).fill("2.0.1 is the release we agreed");
  await page.screenshot({ path: `${shots}/approvals.png` });
  await page.getByRole("button", { name: "Approve" }).click();
  await expectText(page.locator(".flash"), "is now granted", "the decision");

  step("log health");
  await page.getByRole("link", { name: "Log health" }).click();
  await expectText(page.locator("main"), "Ready", "the health page");
  await page.screenshot({ path: `${shots}/health.png` });

  if (offsite.length) throw new Error(`the page made requests off the gateway: ${offsite.join(", ")}`);
  if (errors.length) throw new Error(`script errors: ${errors.join("; ")}`);
  step("done");
} finally {
  await browser.close();
}
