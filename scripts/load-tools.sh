# Sourced by bench.sh and soak.sh: install the Debian packages of the commands they need.
#   need_tools wrk:wrk nginx:nginx-light    (command:package; nginx may also be /usr/sbin/nginx)
need_tools() {
    local missing=() pair command package
    for pair in "$@"; do
        command=${pair%%:*}
        package=${pair#*:}
        command -v "$command" >/dev/null || [ -x "/usr/sbin/$command" ] || missing+=("$package")
    done
    if ((${#missing[@]})); then
        local sudo=""
        [ "$(id -u)" = 0 ] || sudo="sudo"
        echo "==> installing ${missing[*]}" >&2
        { $sudo apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
                "${missing[@]}"; } >/dev/null
    fi
}
