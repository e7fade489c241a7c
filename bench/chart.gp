# gnuplot bench/chart.gp: per-call cost against key count (bench/results/keycount.dat)
set terminal svg size 720,420 font "sans,12"
set output "bench/results/keycount.svg"
set title "flint\\_verify\\_key: per-call cost against key count (20,000 tokens, logging on)"
set logscale x
set xlabel "keys in flint.api\\_keys"
set ylabel "microseconds per call"
set yrange [0:*]
set key top left
set grid
set xtics ("1k" 1000, "10k" 10000, "100k" 100000, "1M" 1000000)
plot "bench/results/keycount.dat" using 1:3 with linespoints lw 2 pt 7 title "key cache off (index scan per call)", \
     "bench/results/keycount.dat" using 1:2 with linespoints lw 2 pt 5 title "key cache on (default)"
