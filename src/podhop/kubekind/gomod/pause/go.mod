module podhop.dev/kubekind/pause

go 1.26.0
