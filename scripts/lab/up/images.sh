# shellcheck shell=bash
# Part of up.sh (sourced after common.sh, never run): the test images, built
# as reproducible tars and imported on every provider up.sh starts.

# Imports .lab/images/<name>.tar as $2 on provider $1 unless the image there
# already carries the same content hash.
ensure_image() {
	local p=$1 name=$2 ref=$3 want have old changes=()
	want=$(<"$IMAGES_DIR/$name.sha256")
	have=$(pdocker "$p" image inspect -f "{{index .Config.Labels \"$IMAGE_HASH_LABEL\"}}" "$ref" 2>/dev/null || true)
	[[ $have != "$want" ]] || return 0
	old=$(pdocker "$p" image inspect -f '{{.Id}}' "$ref" 2>/dev/null || true)
	while IFS= read -r line; do
		[[ -n $line ]] && changes+=(--change "$line")
	done <"$IMAGES_DIR/$name.changes"
	changes+=(--change "LABEL $IMAGE_HASH_LABEL=$want")
	pdocker "$p" import "${changes[@]}" "$IMAGES_DIR/$name.tar" "$ref" >/dev/null ||
		die "$p: docker import of $ref failed"
	log "$p: imported $ref"
	# The replaced image is now untagged; drop it unless a container uses it.
	[[ -z $old ]] || pdocker "$p" rmi "$old" >/dev/null 2>&1 || true
}

ensure_images() {
	bash "$LAB_SCRIPTS_DIR/images/build.sh"
	local p pids=()
	# Both providers import in parallel: each has its own daemon and disk.
	for p in "${PROVIDERS[@]}"; do
		(
			ensure_image "$p" counter "$IMAGE_COUNTER"
			ensure_image "$p" redis "$IMAGE_REDIS"
			ensure_image "$p" web "$IMAGE_WEB"
		) &
		pids+=($!)
	done
	for pid in "${pids[@]}"; do wait "$pid" || die "image import failed"; done
}
