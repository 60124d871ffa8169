# bench/corpus.sh's chart: per profile, each tool's ratio (volume ÷ stored)
# against its backup MB/s; up and to the right is better.
# Variables: datafile, outfile, profiles (space-separated, in datafile order).
set terminal svg size 1200,760 font "sans,10" background "white"
set output outfile
n = words(profiles)
set multiplot layout 2,(n+1)/2 title "gnomon and peers on the corpus: ratio against backup speed"
set xlabel "backup MB/s"
set ylabel "volume ÷ stored"
set grid
set key off
set offsets graph 0.05, graph 0.35, graph 0.1, graph 0.1
set xrange [0:*]
do for [i=1:n] {
  set title word(profiles, i)
  plot datafile index (i-1) using 2:3 with points pt 7 ps 1 lc rgb "#1f5fa0", \
       '' index (i-1) using 2:3:4 with labels offset 0.6,0.5 left font "sans,7"
}
unset multiplot
