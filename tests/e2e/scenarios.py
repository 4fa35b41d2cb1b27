"""The scenario table every executor, transport and input source is run through: each entry is
(transform YAML, expected exit code, expected stdout, expected output (path, text) or None),
over an input folder `in` holding `fruit.txt` with LINES."""

LINES = "apple 3\nbanana 12\ncherry 7\napple 9\n"

SCENARIOS = {
    "cat to stdout": ("cmd: [sh, -c, 'cat $BFLOW_INPUTS/in/*']", 0, LINES, None),
    "write to outputs": ("cmd: [sh, -c, 'wc -l < $BFLOW_INPUTS/in/fruit.txt > $BFLOW_OUTPUTS/lines']", 0, "",
                         ("lines", "4\n")),
    "grep": ("cmd: [grep, apple, /dev/stdin]\n  stdin: \"" + LINES.replace("\n", "\\n") + "\"", 0,
             "apple 3\napple 9\n", None),
    "sed": ("cmd: [sh, -c, 'sed -e s/apple/pear/ $BFLOW_INPUTS/in/fruit.txt']", 0, LINES.replace("apple", "pear"),
            None),
    "awk": ("cmd: [sh, -c, 'awk \"{s += \\$2} END {print s}\" $BFLOW_INPUTS/in/fruit.txt']", 0, "31\n", None),
    "failing command": ("cmd: [sh, -c, 'echo partial; echo broken >&2; exit 4']", 4, "partial\n", None),
}
