import re,sys
def table(md, title):
    i=md.index(title); rows=[]
    for line in md[i:].split('\n')[1:]:
        if line.startswith('## '): break
        if line.startswith('|') and not line.startswith('|---'):
            rows.append([c.strip() for c in line.strip('|').split('|')])
    return rows
def num(c): return float(c.split(' ')[0].replace(',',''))
def get(md):
    r={}
    thr=table(md,'## Response throughput'); hdr=thr[0]
    for row in thr[1:]: r[('thr',row[0],'1k')]=num(row[1]); r[('thr',row[0],'64k')]=num(row[2])
    for t,k in [('## Latency p50','p50'),('## Latency p99','p99')]:
        for row in table(md,t)[1:]: r[(k,row[0],'1k')]=num(row[1]); r[(k,row[0],'64k')]=num(row[2])
    for row in table(md,'## Connections per second')[1:]: r[('cps',row[0],'1k')]=num(row[1]); r[('cps',row[0],'64k')]=num(row[2])
    for row in table(md,'## 64 concurrent connections')[1:]: r[('c64rps',row[0])]=num(row[3]); r[('c64p99',row[0])]=num(row[5])
    for row in table(md,'## CPU seconds per GB')[1:]:
        if row[5]!='-': r[('cpu',row[0],row[1],row[2])]=num(row[5])
    h=table(md,'## Hand-off latency (')
    r['added_p50']=num(h[1][4]); r['phases_p50_decision']=h[1][10]
    return r
runs=sys.argv[1:]
R={v:get(open(f'/tmp/p13/bench/{v}/results.md').read()) for v in runs}
def line(name,f):
    print(f"| {name} | "+" | ".join(f(R[v]) for v in runs)+" |")
print("| measure | "+" | ".join(runs)+" |"); print("|---|"+"---|"*len(runs))
line("proxy-alone / netfilter, 64 KiB, 1 conn, throughput", lambda r: f"{r[('thr','proxy-alone','64k')]:,.0f} / {r[('thr','netfilter','64k')]:,.0f} = {r[('thr','proxy-alone','64k')]/r[('thr','netfilter','64k')]:.2f}")
line("proxy-alone / netfilter, 1 KiB, 1 conn, throughput", lambda r: f"{r[('thr','proxy-alone','1k')]:,.1f} / {r[('thr','netfilter','1k')]:,.1f} = {r[('thr','proxy-alone','1k')]/r[('thr','netfilter','1k')]:.2f}")
line("proxy-alone / netfilter, 64 KiB, 64 conns, req/s", lambda r: f"{r[('c64rps','proxy-alone')]:,.0f} / {r[('c64rps','netfilter')]:,.0f} = {r[('c64rps','proxy-alone')]/r[('c64rps','netfilter')]:.2f}")
line("proxy-alone / netfilter, conn/s 1 KiB", lambda r: f"{r[('cps','proxy-alone','1k')]:,.0f} / {r[('cps','netfilter','1k')]:,.0f} = {r[('cps','proxy-alone','1k')]/r[('cps','netfilter','1k')]:.2f}")
line("p50 µs 64 KiB: proxy-alone / knits / netfilter", lambda r: f"{r[('p50','proxy-alone','64k')]:.0f} / {r[('p50','knits','64k')]:.0f} / {r[('p50','netfilter','64k')]:.0f}")
line("p99 µs 64 KiB: proxy-alone / knits / knits-h1", lambda r: f"{r[('p99','proxy-alone','64k')]:,.0f} / {r[('p99','knits','64k')]:,.0f} / {r[('p99','knits-h1','64k')]:,.0f}")
line("knits / netfilter, 64 KiB, 1 conn, throughput", lambda r: f"{r[('thr','knits','64k')]/r[('thr','netfilter','64k')]:.2f}")
line("conn/s knits-h1 / knits, 1 KiB", lambda r: f"{r[('cps','knits-h1','1k')]:,.0f} / {r[('cps','knits','1k')]:,.0f} = {r[('cps','knits-h1','1k')]/r[('cps','knits','1k')]:.2f}")
line("conn/s knits-h1 / knits, 64 KiB", lambda r: f"{r[('cps','knits-h1','64k')]:,.0f} / {r[('cps','knits','64k')]:,.0f} = {r[('cps','knits-h1','64k')]/r[('cps','knits','64k')]:.2f}")
line("hand-off added, client p50 µs", lambda r: f"{r['added_p50']:.0f}")
line("proxy: decision to acceptance, mean (p50 / p99) µs", lambda r: r['phases_p50_decision'])
line("knits-proxy CPU s/GB, proxy-alone serial / conc64", lambda r: f"{r[('cpu','proxy-alone','serial','64 KiB')]:.2f} / {r[('cpu','proxy-alone','conc64','64 KiB')]:.2f}")
line("knits-proxy CPU s/GB, knits serial / conc64", lambda r: f"{r[('cpu','knits','serial','64 KiB')]:.2f} / {r[('cpu','knits','conc64','64 KiB')]:.2f}")
