# Used by scripts/held-streams-rss.sh: opens N streams to a gateway, holds them
# while sampling its RSS, prints RSS before, at the plateau and per stream.
import asyncio, sys, time
host, port, n, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
body = b'{"model":"paced","messages":[{"role":"user","content":"hi"}],"stream":true}'
req = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body)) + body
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
async def one(ok):
    r, w = await asyncio.open_connection(host, port)
    w.write(req); await w.drain()
    head = await r.readuntil(b"\r\n\r\n")
    if b" 200 " in head.split(b"\r\n")[0]: ok.append(1)
    while True:
        chunk = await r.read(65536)
        if not chunk: break
    w.close()
async def main():
    before = rss()
    ok = []
    tasks = []
    for i in range(n):
        tasks.append(asyncio.create_task(one(ok)))
        if i % 200 == 199: await asyncio.sleep(0.05)
    peak = 0
    t0 = time.time()
    while time.time() - t0 < 6:
        await asyncio.sleep(0.5); peak = max(peak, rss())
    print(f"streams={n} ok_heads={len(ok)} rss_before_kib={before} rss_peak_kib={peak} per_stream_kib={(peak-before)/max(n,1):.1f}")
    for t in tasks: t.cancel()
asyncio.run(main())
