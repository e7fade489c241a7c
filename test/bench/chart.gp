# gnuplot test/bench/chart.gp: per-call cost against key count (test/bench/results/keycount.dat)
set terminal svg size 720,420 font "sans,12"
set output "test/bench/results/keycount.svg"
set title "flint\\_verify\\_key: per-call cost against key count (20,000 tokens, logging on)"
set logscale x
set xlabel "keys in flint.api\\_keys"
set ylabel "microseconds per call"
set yrange [0:*]
set key top left
set grid
set xtics ("1k" 1000, "10k" 10000, "100k" 100000, "1M" 1000000)
plot "test/bench/results/keycount.dat" using 1:3 with linespoints lw 2 pt 7 title "key cache off (index scan per call)", \
     "test/bench/results/keycount.dat" using 1:2 with linespoints lw 2 pt 5 title "key cache on (default)"

# Active keys: tps and worker drain against the number of distinct keys in use
set output "test/bench/results/active.svg"
set terminal svg size 860,560 font "sans,12"
set title "verification tps and log-worker drain against active keys (pgbench -c 2, logging on)"
set xlabel "distinct keys in use"
set ylabel "transactions per second"
set y2label "rows per second (worker drain)"
set ytics nomirror
set y2tics
set y2range [0:*]
set xtics ("10" 10, "1k" 1000, "10k" 10000, "100k" 100000)
set xrange [6:160000]
set yrange [0:120000]
set key top right font ",10" opaque
plot "test/bench/results/active.dat" using 1:2 with linespoints lw 2 pt 7 title "flint\\_verify\\_key 1.2 (tps)", \
     "test/bench/results/active.dat" using 1:3 with linespoints lw 2 pt 5 title "same lookup + sha256() (tps)", \
     "test/bench/results/active.dat" using 1:4 axes x1y2 with linespoints lw 2 pt 9 title "worker drain, 1.2 (rows/s)", \
     "test/bench/results/active_before.dat" using 1:2 with linespoints lw 1 pt 6 title "flint\\_verify\\_key 1.1 (tps)", \
     "test/bench/results/active_before.dat" using 1:4 axes x1y2 with linespoints lw 1 pt 8 title "worker drain, 1.1 (rows/s)"
