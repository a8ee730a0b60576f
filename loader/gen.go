package loader

//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel -type flow_tuple -type frontend_key -type frontend_value -type backend_slot_key -type backend_value -type ct_entry -type rev_nat_entry -type device_value -type dp_config -type reason_stats -type trace_event -type source_range_key -type service_backend_key -type affinity_key -type affinity_value -type frontend_flags -type backend_flags -type ct_flags -type device_flags -type config_flags -type stage -type verdict -type reason datapath ../bpf/datapath.c -- -I../bpf
