#!/usr/bin/env python3
"""Keystroke latency: runs a client command in a local pty, waits for the
remote side to print READY (after `stty raw -echo`), then sends one byte at
a time to `cat` and times each round trip. Prints JSON:
{"p50_us": ..., "p99_us": ..., "rounds": N}."""
import json, os, pty, select, sys, time

def main():
    rounds = int(sys.argv[1])
    command = sys.argv[2:]
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(command[0], command)
    seen = b""
    deadline = time.time() + 60
    while b"READY" not in seen:
        if time.time() > deadline:
            sys.exit("no READY from the remote side: %r" % seen[-200:])
        r, _, _ = select.select([fd], [], [], 1)
        if r:
            seen += os.read(fd, 4096)
    # Let the line after READY arrive before timing.
    time.sleep(0.2)
    while select.select([fd], [], [], 0.05)[0]:
        os.read(fd, 4096)
    samples = []
    for i in range(rounds):
        byte = bytes([ord("a") + i % 26])
        start = time.perf_counter()
        os.write(fd, byte)
        got = b""
        while byte not in got:
            r, _, _ = select.select([fd], [], [], 10)
            if not r:
                sys.exit("timed out waiting for the echo")
            got += os.read(fd, 64)
        samples.append((time.perf_counter() - start) * 1e6)
    os.write(fd, b"\x03\x04")
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass
    samples.sort()
    print(json.dumps({"p50_us": samples[len(samples) // 2], "p99_us": samples[int(len(samples) * 0.99) - 1], "rounds": rounds}))

main()
