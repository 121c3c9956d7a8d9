import csv,statistics as st
# runs whose p99 >= 40 ms, per scenario and measure=serial, size 64 KiB, across the 4 rounds
for v in ['before','after']:
    cnt={}; tot={}
    for r in range(1,5):
        for row in csv.DictReader(open(f'/tmp/p13/bench/{v}-r{r}/runs.csv')):
            if row['size_bytes']!='65536': continue
            k=(row['scenario'],row['measure'])
            tot[k]=tot.get(k,0)+1
            if float(row['lat_p99_us'] or 0)>=40000: cnt[k]=cnt.get(k,0)+1
    print(v, {f"{a}/{b}":f"{cnt.get((a,b),0)}/{tot[(a,b)]}" for (a,b) in sorted(tot)})
