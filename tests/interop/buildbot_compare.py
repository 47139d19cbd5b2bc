#!/usr/bin/env python3
"""Compare the builds a Buildbot master ran for two workers ("py" = Debian's
buildbot-worker, "c" = pbworker): every step's name, result, state string and
log text must match, modulo the worker base directories, builder names in
paths and times.  Also compares the files uploaded to the master.

usage: buildbot_compare.py STATE_SQLITE WORKDIR
Prints one "ok"/"FAIL" line per comparison and, last, "N passed, M failed"
on a line of its own prefixed by "compare:".  Exit status 1 on any failure.
"""
import difflib, filecmp, os, re, sqlite3, sys

db, work = sys.argv[1], sys.argv[2]
c = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
R = ["SUCCESS", "WARNINGS", "FAILURE", "SKIPPED", "EXCEPTION", "RETRY", "CANCELLED"]
passed = failed = 0


def norm(text, w):
    base = os.path.join(work, "w" + w)
    text = text.replace(base, "<WB>")
    text = re.sub(r"<WB>/%s-b" % w, "<WB>/X-b", text)
    text = re.sub(r"elapsedTime=[0-9.]+", "elapsedTime=T", text)
    text = text.replace("worker %s ready" % w, "worker W ready")
    return text


def build(builder, number=1):
    row = c.execute("select b.id, b.results, b.state_string from builds b join builders bu "
                    "on bu.id=b.builderid where bu.name=? and b.number=?", (builder, number)).fetchone()
    if not row:
        return None
    bid, res, ss = row
    steps = []
    for sid, num, name, sres, sss in c.execute(
            "select id, number, name, results, state_string from steps where buildid=? "
            "order by number", (bid,)).fetchall():
        logs = []
        for lid, lname in c.execute("select id, name from logs where stepid=? order by id",
                                    (sid,)).fetchall():
            text = "".join(
                ch if isinstance(ch, str) else ch.decode("utf-8", "replace")
                for (ch,) in c.execute("select content from logchunks where logid=? "
                                       "order by first_line", (lid,)))
            logs.append((lname, text))
        steps.append((num, name, sres, sss, logs))
    return res, ss, steps


def check(ok, what, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print("ok   %s" % what)
    else:
        failed += 1
        print("FAIL %s%s" % (what, detail))


for b in ("b1", "b2"):
    py, cc = build("py-" + b), build("c-" + b)
    if py is None or cc is None:
        check(False, "build %s ran for both workers" % b)
        continue
    check(R[py[0]] == R[cc[0]] and norm(py[1], "py") == norm(cc[1], "c"),
          "build %s result %s / %s" % (b, R[py[0]], R[cc[0]]),
          "\n      py: %s %r\n      c:  %s %r" % (R[py[0]], py[1], R[cc[0]], cc[1]))
    steps_c = {s[0]: s for s in cc[2]}
    for num, name, sres, sss, logs in py[2]:
        other = steps_c.get(num)
        if not other:
            check(False, "%s step %d %s exists for c" % (b, num, name))
            continue
        same = (name, sres, norm(sss, "py")) == (other[1], other[2], norm(other[3], "c"))
        check(same, "%s step %2d %-16s %s" % (b, num, name, R[sres] if sres is not None else sres),
              "\n      py: %r %s %r\n      c:  %r %s %r" % (name, sres, sss, other[1], other[2], other[3]))
        lp = [(n, norm(t, "py")) for n, t in logs]
        lc = [(n, norm(t, "c")) for n, t in other[4]]
        if lp != lc:
            diff = []
            for (n1, t1), (n2, t2) in zip(lp + [("-", "")] * 9, lc + [("-", "")] * 9):
                if (n1, t1) != (n2, t2):
                    diff += ["   log %r vs %r" % (n1, n2)] + [
                        "      " + l for l in difflib.unified_diff(
                            t1.splitlines(), t2.splitlines(), "python-worker", "pbworker",
                            lineterm="")]
            check(False, "%s step %2d %-16s logs" % (b, num, name), "\n" + "\n".join(diff[:80]))
        else:
            check(True, "%s step %2d %-16s logs (%d: %s)" % (b, num, name, len(lp),
                                                            ", ".join(n for n, _ in lp)))
    extra = set(steps_c) - {s[0] for s in py[2]}
    check(not extra, "%s: no extra steps for c" % b)

# files uploaded to the master
out_py, out_c = os.path.join(work, "out", "py"), os.path.join(work, "out", "c")


def tree(root):
    res = {}
    for dp, dn, fn in os.walk(root):
        for f in fn:
            p = os.path.join(dp, f)
            res[os.path.relpath(p, root)] = open(p, "rb").read()
    return res


tp, tc = tree(out_py), tree(out_c)
check(tp == tc and tp, "uploaded files identical (%s)" % ", ".join(sorted(tp)),
      "\n      py: %s\n      c:  %s" % (sorted(tp), sorted(tc)))
print("compare: %d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
