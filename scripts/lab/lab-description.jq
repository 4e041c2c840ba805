# The shell's view of lab-description.json: one "NAME<TAB>value" line per variable
# common.sh fills (NAME[key] for an array element). Every field is checked for its
# type here, so a wrong edit stops a lab script with the field's name before it
# touches anything; the consistency of the values (addresses inside their subnets,
# disjoint pools, ...) is describe.py's check, which up.sh runs first.

def where($path): $path | map(tostring) | join(".");

def need($path; $want):
  getpath($path) as $v
  | if ($v | type) != $want then
      error("`\(where($path))` is \($v | tojson), not a \($want)")
    elif $want == "string" and ($v | test("^$|[[:cntrl:]]")) then
      error("`\(where($path))` is \($v | tojson): empty or with a control character")
    elif $want == "number" and ($v != ($v | floor) or $v < 0) then
      error("`\(where($path))` is \($v | tojson), not a whole number >= 0")
    else $v end;

def str($path): need($path; "string");
def num($path): need($path; "number") | tostring;
def flag($path): need($path; "boolean");
# A name that also becomes a path component and an array key.
def name($path):
  str($path) as $v
  | if $v | test("^[a-z0-9][a-z0-9-]*$") then $v
    else error("`\(where($path))` is \($v | tojson): only a-z, 0-9 and - (not first) are allowed") end;
def abspath($path):
  str($path) as $v
  | if $v | test("^/[^ ]*[^/ ]$") then $v
    else error("`\(where($path))` is \($v | tojson), not an absolute path without spaces or a trailing /") end;
def line($var; value): "\($var)\t\(value)";

. as $d
| if type != "object" then error("the description is not a JSON object") else . end
| need(["providers"]; "array") as $providers
| if ($providers | length) == 0 then error("`providers` is empty") else . end
| [range(0; $providers | length) | ["providers", .] as $p | $d | {p: $p, name: name($p + ["name"]), extra: flag($p + ["on_demand"])}] as $list
| ([$list[] | select(.extra | not)] | to_entries) as $started
| ([$list[] | select(.extra)] | to_entries) as $extra
| line("LAB_RUN"; abspath(["state", "run_dir"])),
  line("LAB_DATA"; abspath(["state", "data_dir"])),
  line("LAB_LOG"; abspath(["state", "log_dir"])),
  line("HOST_BRIDGE"; name(["host_bridge", "name"])),
  line("HOST_ADDR"; str(["host_bridge", "address"])),
  line("PUBLIC_PREFIX_LEN"; num(["host_bridge", "prefix_len"])),
  line("HOST_UNUSED_ADDR"; str(["host_bridge", "unused_address"])),
  line("LAB_PATH"; str(["dockerd_path"])),
  ($started[] | line("PROVIDERS[\(.key)]"; .value.name)),
  ($extra[] | line("EXTRA_PROVIDERS[\(.key)]"; .value.name)),
  ($list[] | .p as $p | .name as $n | $d
    | line("P_NETNS[\($n)]"; name($p + ["netns"])),
      line("P_VETH[\($n)]"; name($p + ["veth"])),
      line("P_ADDR[\($n)]"; str($p + ["public_address"])),
      line("P_BIP[\($n)]"; str($p + ["bridge_ip"])),
      line("P_SUBNET[\($n)]"; str($p + ["bridge_subnet"])),
      line("P_POOL[\($n)]"; str($p + ["address_pool"])),
      line("P_POOL_SIZE[\($n)]"; num($p + ["address_pool_size"])),
      (if flag($p + ["tls"]) then line("P_TLS[\($n)]"; 1) else empty end),
      (if flag($p + ["runtime"]) then line("P_RUNTIME[\($n)]"; 1) else empty end),
      (if getpath($p + ["path"]) != null then line("P_PATH[\($n)]"; str($p + ["path"])) else empty end),
      (if getpath($p + ["engine_suite"]) != null then line("P_SUITE[\($n)]"; name($p + ["engine_suite"])) else empty end),
      (if getpath($p + ["image_store"]) != null then line("P_IMAGE_STORE[\($n)]"; name($p + ["image_store"])) else empty end)),
  line("TLS_PORT"; num(["tls", "port"])),
  line("TLS_SERVER_DNS"; str(["tls", "server_dns_name"])),
  line("DNS_ADDR"; str(["dns", "listen_address"])),
  line("DNS_ZONE"; str(["dns", "zone"])),
  line("DNS_TTL"; num(["dns", "ttl"])),
  line("DNS_PORT"; num(["dns", "bind", "port"])),
  line("TSIG_KEY_NAME"; name(["dns", "bind", "tsig_key_name"])),
  line("TSIG_ALGORITHM"; name(["dns", "bind", "tsig_algorithm"])),
  line("PDNS_PORT"; num(["dns", "powerdns", "port"])),
  line("PDNS_API_PORT"; num(["dns", "powerdns", "api_port"])),
  line("PDNS_SERVER_ID"; name(["dns", "powerdns", "server_id"])),
  line("IMAGE_COUNTER"; str(["images", "counter"])),
  line("IMAGE_REDIS"; str(["images", "redis"])),
  line("IMAGE_WEB"; str(["images", "web"]))
