import sys,statistics as st,csv
sys.argv=['x']
exec(open('/tmp/p13/summ.py').read().split('runs=sys.argv[1:]')[0])
runs={'before':[5,6],'grace':[5,6]}
R={f'{v}-r{r}':get(open(f'/tmp/p13/bench/{v}-r{r}/results.md').read()) for v in runs for r in runs[v]}
rows=[
("proxy-alone / netfilter, throughput, 64 KiB, 1 connection", lambda r: r[('thr','proxy-alone','64k')]/r[('thr','netfilter','64k')]),
("proxy-alone / netfilter, requests/s, 64 KiB, 64 connections", lambda r: r[('c64rps','proxy-alone')]/r[('c64rps','netfilter')]),
("knits-h1 / knits, connections/s, 1 KiB", lambda r: r[('cps','knits-h1','1k')]/r[('cps','knits','1k')]),
("knits-h1 / knits, connections/s, 64 KiB", lambda r: r[('cps','knits-h1','64k')]/r[('cps','knits','64k')]),
("hand-off added, client p50, µs", lambda r: r['added_p50']),
("p50, 64 KiB, proxy-alone / knits, µs", lambda r: (r[('p50','proxy-alone','64k')], r[('p50','knits','64k')])),
("p99, 64 KiB, knits / knits-h1, µs", lambda r: (r[('p99','knits','64k')], r[('p99','knits-h1','64k')])),
("knits-proxy CPU s/GB, 64 connections, proxy-alone / knits", lambda r: (r[('cpu','proxy-alone','conc64','64 KiB')], r[('cpu','knits','conc64','64 KiB')])),
]
def fmt(x):
    if isinstance(x,tuple): return " / ".join(fmt(y) for y in x)
    return f"{x:.2f}" if x<10 else f"{x:,.0f}"
print("| measure | before r5, r6 | after (grace) r5, r6 |"); print("|---|---|---|")
for name,f in rows:
    print(f"| {name} | "+"; ".join(fmt(f(R[f'before-r{r}'])) for r in runs['before'])+" | "+"; ".join(fmt(f(R[f'grace-r{r}'])) for r in runs['grace'])+" |")
for v in runs:
    cnt=0; tot=0
    for r in runs[v]:
        for row in csv.DictReader(open(f'/tmp/p13/bench/{v}-r{r}/runs.csv')):
            if row['size_bytes']=='65536' and row['scenario'] in ('knits','knits-h1'):
                tot+=1; cnt+= float(row['lat_p99_us'] or 0)>=40000
    print(f"{v}: 64 KiB knits/knits-h1 runs with p99 >= 40 ms: {cnt} of {tot}")
