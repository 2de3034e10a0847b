"""Drive the original Vantum frontend (built unmodified) in headless Chromium.

Used by scripts/check-original-frontend.sh, which builds the frontend, starts
``vantum serve`` against the fake providers and serves the built page. This
presses the page's own buttons with Chromium's fake microphone, and counts the
audio buffers the page schedules (by wrapping ``AudioBufferSourceNode.start``, an
observation that changes nothing the page does). Exit status 0 if every turn was
answered with audio and the page reported no error.

    python scripts/original_frontend_check.py PAGE_URL [TURNS]
"""

from __future__ import annotations

import asyncio
import sys

from playwright.async_api import async_playwright

COUNT_PLAYED_AUDIO = """
window.__played = [];
const start = AudioBufferSourceNode.prototype.start;
AudioBufferSourceNode.prototype.start = function (...args) {
  window.__played.push(this.buffer ? this.buffer.duration : 0);
  return start.apply(this, args);
};
"""


async def check(url: str, turns: int) -> int:
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=[
                "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream",
                "--autoplay-policy=no-user-gesture-required",
                "--no-sandbox",
            ],
        )
        context = await browser.new_context(permissions=["microphone"])
        page = await context.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        page.on(
            "console",
            lambda m: problems.append(f"console.error: {m.text}") if m.type == "error" else None,
        )
        await page.add_init_script(COUNT_PLAYED_AUDIO)
        await page.goto(url)
        connect = page.get_by_role("button", name="Connect", exact=True)
        await page.wait_for_load_state("networkidle")
        if await connect.is_visible():  # the page may wait for a click to connect
            await connect.click()
        # The page records only once connection.ack has given it a session id.
        await page.get_by_role("button", name="Start Recording").wait_for(timeout=15_000)
        answered = 0
        for turn in range(1, turns + 1):
            before = await page.evaluate("window.__played.length")
            await page.get_by_role("button", name="Start Recording").click()
            await page.wait_for_timeout(2_000)  # the fake microphone "speaks" for 2 s
            await page.get_by_role("button", name="Stop Recording").click()
            count, steady = -1, 0
            for _ in range(150):  # until the answer's audio stops growing (2 s steady)
                await page.wait_for_timeout(200)
                now = await page.evaluate("window.__played.length")
                steady = steady + 1 if now == count and now > before else 0
                count = now
                if steady >= 10:
                    break
            played: list[float] = (await page.evaluate("window.__played"))[before:]
            print(f"turn {turn}: {len(played)} audio buffers, {sum(played):.2f} s played")
            answered += bool(played)
        text = await page.inner_text("body")
        print("page:", " | ".join(line for line in text.splitlines() if line.strip())[:300])
        await browser.close()
    for problem in problems:
        print(problem)
    ok = answered == turns and not problems and "Connected" in text
    print("OK: the original frontend held the conversation" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(check(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3)))
