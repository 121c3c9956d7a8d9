import sys,statistics as st
sys.argv=['x']
exec(open('/tmp/p13/summ.py').read().split('runs=sys.argv[1:]')[0])
R={f'{v}-r{r}':get(open(f'/tmp/p13/bench/{v}-r{r}/results.md').read()) for v in ['before','after'] for r in range(1,5)}
def med(v,f): return st.median([f(R[f'{v}-r{r}']) for r in range(1,5)])
def vals(v,f): return ", ".join(f"{f(R[f'{v}-r{r}']):.2f}" if f(R[f'{v}-r{r}'])<10 else f"{f(R[f'{v}-r{r}']):,.0f}" for r in range(1,5))
rows=[
("proxy-alone / netfilter, throughput, 64 KiB, 1 connection", lambda r: r[('thr','proxy-alone','64k')]/r[('thr','netfilter','64k')]),
("proxy-alone / netfilter, throughput, 1 KiB, 1 connection", lambda r: r[('thr','proxy-alone','1k')]/r[('thr','netfilter','1k')]),
("proxy-alone / netfilter, requests/s, 64 KiB, 64 connections", lambda r: r[('c64rps','proxy-alone')]/r[('c64rps','netfilter')]),
("proxy-alone / netfilter, connections/s, 1 KiB", lambda r: r[('cps','proxy-alone','1k')]/r[('cps','netfilter','1k')]),
("knits / netfilter, throughput, 64 KiB, 1 connection", lambda r: r[('thr','knits','64k')]/r[('thr','netfilter','64k')]),
("knits-h1 / knits, connections/s, 1 KiB", lambda r: r[('cps','knits-h1','1k')]/r[('cps','knits','1k')]),
("knits-h1 / knits, connections/s, 64 KiB", lambda r: r[('cps','knits-h1','64k')]/r[('cps','knits','64k')]),
("hand-off added, client p50, µs", lambda r: r['added_p50']),
("p50, 64 KiB, proxy-alone, µs", lambda r: r[('p50','proxy-alone','64k')]),
("p50, 64 KiB, knits, µs", lambda r: r[('p50','knits','64k')]),
("p99, 64 KiB, knits, µs", lambda r: r[('p99','knits','64k')]),
("p99, 64 KiB, knits-h1, µs", lambda r: r[('p99','knits-h1','64k')]),
("p99, 64 KiB, proxy-alone, µs", lambda r: r[('p99','proxy-alone','64k')]),
("knits-proxy CPU s/GB, proxy-alone, 1 / 64 connections", None),
("knits-proxy CPU s/GB, knits, 1 / 64 connections", None),
]
print("| measure | before: median (the 4 runs) | after: median (the 4 runs) |"); print("|---|---|---|")
for name,f in rows:
    if f is None:
        sc='proxy-alone' if 'proxy-alone' in name else 'knits'
        f1=lambda r,sc=sc: r[('cpu',sc,'serial','64 KiB')]; f2=lambda r,sc=sc: r[('cpu',sc,'conc64','64 KiB')]
        print(f"| {name} | {med('before',f1):.2f} / {med('before',f2):.2f} | {med('after',f1):.2f} / {med('after',f2):.2f} |")
        continue
    fmt=lambda x: f"{x:.2f}" if x<10 else f"{x:,.0f}"
    print(f"| {name} | {fmt(med('before',f))} ({vals('before',f)}) | {fmt(med('after',f))} ({vals('after',f)}) |")
