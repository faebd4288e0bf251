# plot.gp: the plots of bench/suite.sh (see doc/bench.md).
#
# Called as  gnuplot -e "mode='...'; out='X.png'; ..." bench/plot.gp
#
# mode='rss'    RSS over time, one line per allocator.
#               files='a.csv b.csv ...'  tide-rss CSVs (header t_ms,rss_kb,...)
#               titles='glibc tcmalloc ...'  one legend entry per file
#               colors='#555555 #1f77b4 ...'  one colour per file
#               ttl='...'  plot title
# mode='bars'   grouped bars of ratios (tidemalloc = 1, dashed line at 1).
#               dat='X.dat'  whitespace-separated, header "workload A1 A2 ...",
#                            then one row per group; NaN = no data
#               colors, ttl, ylab='...'  y axis label
# mode='phases' grouped bars of absolute values (no line at 1); same variables.
#
# Word lists are split on spaces: file names must not contain spaces (the
# suite runs gnuplot from its output directory with relative paths).

if (!exists("mode")) mode = 'rss'
if (!exists("ttl")) ttl = ''
if (!exists("ylab")) ylab = ''
if (!exists("colors")) colors = ''

# bar charts hold up to ~14 groups of 5 bars: wider
width = (mode eq 'rss') ? 1200 : 1400
if (strstrt(GPVAL_TERMINALS, "pngcairo") > 0) {
	set terminal pngcairo size width,700 font "DejaVu Sans,11" noenhanced
} else {
	set terminal png size width,700 noenhanced
}
set output out
set title ttl font ",14"
set grid ytics lc rgb "#dddddd"
set border 3
set tics nomirror
set key outside right top vertical Left reverse noautotitle

# colour of series i (falls back to gnuplot's own when the list is short)
col(i) = (i <= words(colors)) ? word(colors, i) : "#000000"

if (mode eq 'rss') {
	set datafile separator ","
	set xlabel "time since start (s)"
	set ylabel "RSS (MiB)"
	set yrange [0:*]
	set xrange [0:*]
	plot for [i=1:words(files)] word(files, i) skip 1 \
		using ($1 / 1000.0):($2 / 1024.0) with lines \
		lw (word(titles, i) eq "tidemalloc" ? 3 : 2) lc rgb col(i) \
		title word(titles, i)
} else {
	set datafile missing "NaN"
	set style data histograms
	set style histogram clustered gap 1
	set style fill solid 0.85 border rgb "#333333"
	set boxwidth 0.9
	set ylabel ylab
	set yrange [0:*]
	set xtics rotate by -30 scale 0
	set bmargin 6
	stats dat using 0 skip 1 nooutput
	nrows = STATS_records
	ncols = words(colors)
	set xrange [-0.6:nrows - 0.4]
	set offsets 0, 0, graph 0.1, 0
	set style textbox opaque noborder margins 0.5, 0.5
	# x of bar i (column i + 1) in group $0: the clustered layout puts
	# ncols bars of width 1/(ncols + gap) around the group's centre
	barx(i) = $0 + (i - (ncols + 1) / 2.0) / (ncols + 1.0)
	lbl(v) = (mode eq 'bars') ? sprintf("%.2f", v) : sprintf("%.1f", v)
	if (mode eq 'bars') {
		plot 1 with lines dt 2 lw 2 lc rgb "#000000" title "tidemalloc = 1", \
			for [i=2:ncols + 1] dat using i:xtic(1) title columnheader(i) lc rgb col(i - 1), \
			for [i=2:ncols + 1] dat skip 1 using (barx(i - 1)):(column(i)):(lbl(column(i))) \
				with labels boxed rotate by 90 left offset 0,0.5 font ",8" notitle
	} else {
		plot for [i=2:ncols + 1] dat using i:xtic(1) title columnheader(i) lc rgb col(i - 1), \
			for [i=2:ncols + 1] dat skip 1 using (barx(i - 1)):(column(i)):(lbl(column(i))) \
				with labels boxed rotate by 90 left offset 0,0.5 font ",8" notitle
	}
}
