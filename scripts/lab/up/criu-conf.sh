# shellcheck shell=bash
# Part of up.sh (sourced after common.sh, never run): the CRIU options runc's
# dumps and restores get, in /etc/criu/runc.conf.

ensure_runc_conf() {
	# CRIU reads this file whenever runc drives it: the only way to give
	# Docker-driven dumps options. Lines are added when missing, never removed,
	# so options added by hand survive.
	# - log-file: runc deletes CRIU's restore log when a restore fails; a fixed
	#   log file keeps the last dump/restore log.
	# - tcp-close: a container with an established TCP connection (Redis with
	#   its web client) cannot be dumped otherwise; its connections come back
	#   closed and the peer reconnects. (Keeping them needs tcp-established and
	#   the same address on the destination: the network work decides that.)
	local conf=/etc/criu/runc.conf line
	mkdir -p /etc/criu
	[[ -e $conf ]] || printf '# vimigrate lab: options for runc-driven CRIU runs\n' >"$conf"
	# - skip-in-flight: connections still in a listening socket's accept queue
	#   (a server under load) would make every dump fail; they are dropped.
	for line in "log-file $LAB_LOG/criu-runc.log" "tcp-close" "skip-in-flight"; do
		grep -qxF "$line" "$conf" || printf '%s\n' "$line" >>"$conf"
	done
}

ensure_pipe_size() {
	# CRIU's lazy pages (post-copy) splice page runs through pipes it grows with
	# F_SETPIPE_SZ; without CAP_SYS_RESOURCE (this sandbox's root has none) it
	# cannot grow them past fs.pipe-max-size, and the default 1 MiB fails its
	# transfer ("splice: Bad file descriptor"); 4 MiB works. The lab's
	# providers are this host, so the host's limit is raised (never lowered).
	local want=4194304 now
	now=$(cat /proc/sys/fs/pipe-max-size)
	if ((now < want)); then
		echo "$want" >/proc/sys/fs/pipe-max-size
		log "fs.pipe-max-size raised from $now to $want for CRIU's lazy pages"
	fi
}
