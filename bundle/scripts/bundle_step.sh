# Sourced by the bundle's scripts (quickstart.sh, real_cpu.sh): `step TITLE ARGS...` prints and times one
# `$PYTHON -m monai.bundle run ARGS...` command; with DRY_RUN set (non-empty) it only prints the command.
# The printed command can be pasted into a shell: arguments with spaces or quotes are printed in double quotes.
# `configs FILE...` prints the --config_file list literal of the files, a bare file name taken from configs/:
# `configs common.json configs/recipes/cpu.json` -> "['configs/common.json','configs/recipes/cpu.json']".
configs() {
    local out="" name
    for name in "$@"; do
        [[ "$name" == */* ]] || name="configs/$name"
        out+="${out:+,}'$name'"
    done
    echo "[$out]"
}

shell_words() {
    local out=() a
    for a in "$@"; do
        if [[ "$a" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
            out+=("$a")
        else
            a="${a//\\/\\\\}"; a="${a//\"/\\\"}"; a="${a//\$/\\\$}"; a="${a//\`/\\\`}"
            out+=("\"$a\"")
        fi
    done
    echo "${out[*]}"
}

step() {
    local title="$1"
    shift
    echo
    echo "=== $title"
    echo "+ $(shell_words "$PYTHON" -m monai.bundle run "$@")"
    if [[ -n "${DRY_RUN:-}" ]]; then return 0; fi
    local start=$SECONDS
    "$PYTHON" -m monai.bundle run "$@"
    echo "=== $title: done in $((SECONDS - start)) s"
    # MONAI's notice about parsing config files (these are the project's own) once, not once per step
    export PYTHONWARNINGS="ignore:parsing config_file${PYTHONWARNINGS:+,$PYTHONWARNINGS}"
}
