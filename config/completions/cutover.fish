# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_cutover_global_optspecs
    string join \n h/help V/version
end

function __fish_cutover_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_cutover_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_cutover_using_subcommand
    set -l cmd (__fish_cutover_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c cutover -n "__fish_cutover_needs_command" -s h -l help -d 'Print help'
complete -c cutover -n "__fish_cutover_needs_command" -s V -l version -d 'Print version'
complete -c cutover -n "__fish_cutover_needs_command" -f -a "run" -d 'Run the proxy'
complete -c cutover -n "__fish_cutover_needs_command" -f -a "check" -d 'Validate a config file and exit: 0 if valid, 1 with every problem'
complete -c cutover -n "__fish_cutover_needs_command" -f -a "ctl" -d 'Admin client: status, split, rollout, mirror, drain, enable, disable, add, remove, reload…'
complete -c cutover -n "__fish_cutover_needs_command" -f -a "demo" -d 'Zero-setup tour: two demo apps and the proxy on loopback'
complete -c cutover -n "__fish_cutover_needs_command" -f -a "completions" -d 'Print a shell completion script: `cutover completions bash > /etc/bash_completion.d/cutover`'
complete -c cutover -n "__fish_cutover_needs_command" -f -a "manpage" -d 'Print the man pages (roff) as one document: `cutover manpage > cutover.1`; with --dir, write one page per command instead (cutover.1, cutover-ctl.1, cutover-ctl-rollout.1, …), as the Debian package installs them'
complete -c cutover -n "__fish_cutover_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cutover -n "__fish_cutover_using_subcommand run" -s c -l config -d 'Config file [default: ./cutover.toml, else /etc/cutover/cutover.toml]' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand run" -l discard-state -d 'If the runtime state file in [state] dir does not parse, move it aside and start from the config file alone (a valid one is kept)'
complete -c cutover -n "__fish_cutover_using_subcommand run" -s h -l help -d 'Print help'
complete -c cutover -n "__fish_cutover_using_subcommand check" -s c -l config -d 'Config file [default: ./cutover.toml, else /etc/cutover/cutover.toml]' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand check" -l resolve -d 'Also look up every upstream given by DNS name; one that does not resolve is a problem'
complete -c cutover -n "__fish_cutover_using_subcommand check" -s h -l help -d 'Print help'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and not __fish_seen_subcommand_from status split mirror rollout undo promote pause resume abort drain enable disable add remove health audit reload upgrade help" -l admin -d 'Admin API base URL (`HOST:PORT` alone means `http://HOST:PORT`)' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and not __fish_seen_subcommand_from status split mirror rollout undo promote pause resume abort drain enable disable add remove health audit reload upgrade help" -l token-file -d 'File holding the admin bearer token' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and not __fish_seen_subcommand_from status split mirror rollout undo promote pause resume abort drain enable disable add remove health audit reload upgrade help" -l ca -d 'CA certificate (PEM) to verify an `https://` admin API against; without it, the system\'s CAs' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and not __fish_seen_subcommand_from status split mirror rollout undo promote pause resume abort drain enable disable add remove health audit reload upgrade help" -l cert -d 'Client certificate (PEM) for an admin API that asks for one (`[admin] tls.client_ca`); with --key' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and not __fish_seen_subcommand_from status split mirror rollout undo promote pause resume abort drain enable disable add remove health audit reload upgrade help" -l key -d 'The client certificate\'s private key (PEM)' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and not __fish_seen_subcommand_from status split mirror rollout undo promote pause resume abort drain enable disable add remove health audit reload upgrade help" -l json -d 'Print the API\'s JSON instead of a table'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and not __fish_seen_subcommand_from status split mirror rollout undo promote pause resume abort drain enable disable add remove health audit reload upgrade help" -s h -l help -d 'Print help'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and not __fish_seen_subcommand_from status split mirror rollout undo promote pause resume abort drain enable disable add remove health audit reload upgrade help" -f -a "status" -d 'Routes with their configured and effective split, mirrors, and every upstream\'s state and in-flight count'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and not __fish_seen_subcommand_from status split mirror rollout undo promote pause resume abort drain enable disable add remove health audit reload upgrade help" -f -a "split" -d 'Set a route\'s split: `cutover ctl split app blue=90 green=10`'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and not __fish_seen_subcommand_from status split mirror rollout undo promote pause resume abort drain enable disable add remove health audit reload upgrade help" -f -a "mirror" -d 'Copy a share of a route\'s requests to a pool and compare its answers with the clients\': `cutover ctl mirror app green=10` (0 stops it)'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and not __fish_seen_subcommand_from status split mirror rollout undo promote pause resume abort drain enable disable add remove health audit reload upgrade help" -f -a "rollout" -d 'Progressive shift to a pool, judged on live traffic, rolled back by itself on a breach. With --wait: one line per event; exit 0 promoted, 2 rolled back, 3 aborted, 1 error'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and not __fish_seen_subcommand_from status split mirror rollout undo promote pause resume abort drain enable disable add remove health audit reload upgrade help" -f -a "undo" -d 'Put a route\'s split back to what it was before its last change (a promoted rollout, a split set by hand); --pool: every route whose last change moved the pool\'s share. Refused if the split moved since'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and not __fish_seen_subcommand_from status split mirror rollout undo promote pause resume abort drain enable disable add remove health audit reload upgrade help" -f -a "promote" -d 'Approve a rollout waiting for approval, or skip the rest of its step'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and not __fish_seen_subcommand_from status split mirror rollout undo promote pause resume abort drain enable disable add remove health audit reload upgrade help" -f -a "pause" -d 'Hold a rollout at its step (analysis stops; the split stays)'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and not __fish_seen_subcommand_from status split mirror rollout undo promote pause resume abort drain enable disable add remove health audit reload upgrade help" -f -a "resume" -d 'Go on with a paused rollout'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and not __fish_seen_subcommand_from status split mirror rollout undo promote pause resume abort drain enable disable add remove health audit reload upgrade help" -f -a "abort" -d 'Stop a rollout and return to the split it started from'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and not __fish_seen_subcommand_from status split mirror rollout undo promote pause resume abort drain enable disable add remove health audit reload upgrade help" -f -a "drain" -d 'No new requests to an upstream (or every upstream of a pool); in-flight ones finish'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and not __fish_seen_subcommand_from status split mirror rollout undo promote pause resume abort drain enable disable add remove health audit reload upgrade help" -f -a "enable" -d 'Back into rotation (clears disable and drain)'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and not __fish_seen_subcommand_from status split mirror rollout undo promote pause resume abort drain enable disable add remove health audit reload upgrade help" -f -a "disable" -d 'Out of rotation now'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and not __fish_seen_subcommand_from status split mirror rollout undo promote pause resume abort drain enable disable add remove health audit reload upgrade help" -f -a "add" -d 'Add an upstream to a pool'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and not __fish_seen_subcommand_from status split mirror rollout undo promote pause resume abort drain enable disable add remove health audit reload upgrade help" -f -a "remove" -d 'Remove an upstream from a pool: it drains first, then leaves'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and not __fish_seen_subcommand_from status split mirror rollout undo promote pause resume abort drain enable disable add remove health audit reload upgrade help" -f -a "health" -d 'Whether every upstream of a pool is healthy (in rotation: not unhealthy, ejected, disabled or draining); exit 0 if so, 5 if not — a deploy script\'s guard before it moves traffic'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and not __fish_seen_subcommand_from status split mirror rollout undo promote pause resume abort drain enable disable add remove health audit reload upgrade help" -f -a "audit" -d 'The last entries of the audit log: who changed what, and how it ended'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and not __fish_seen_subcommand_from status split mirror rollout undo promote pause resume abort drain enable disable add remove health audit reload upgrade help" -f -a "reload" -d 'Re-read the config file'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and not __fish_seen_subcommand_from status split mirror rollout undo promote pause resume abort drain enable disable add remove health audit reload upgrade help" -f -a "upgrade" -d 'Binary upgrade: a new process takes the listening sockets'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and not __fish_seen_subcommand_from status split mirror rollout undo promote pause resume abort drain enable disable add remove health audit reload upgrade help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from status" -l admin -d 'Admin API base URL (`HOST:PORT` alone means `http://HOST:PORT`)' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from status" -l token-file -d 'File holding the admin bearer token' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from status" -l ca -d 'CA certificate (PEM) to verify an `https://` admin API against; without it, the system\'s CAs' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from status" -l cert -d 'Client certificate (PEM) for an admin API that asks for one (`[admin] tls.client_ca`); with --key' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from status" -l key -d 'The client certificate\'s private key (PEM)' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from status" -l fleet -d 'Also every instance of the fleet (`[cluster]`): its revision, last heartbeat and requests in flight'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from status" -l json -d 'Print the API\'s JSON instead of a table'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from status" -s h -l help -d 'Print help'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from split" -l admin -d 'Admin API base URL (`HOST:PORT` alone means `http://HOST:PORT`)' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from split" -l token-file -d 'File holding the admin bearer token' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from split" -l ca -d 'CA certificate (PEM) to verify an `https://` admin API against; without it, the system\'s CAs' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from split" -l cert -d 'Client certificate (PEM) for an admin API that asks for one (`[admin] tls.client_ca`); with --key' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from split" -l key -d 'The client certificate\'s private key (PEM)' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from split" -l force -d 'Send traffic even to a pool with no healthy upstream'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from split" -l json -d 'Print the API\'s JSON instead of a table'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from split" -s h -l help -d 'Print help'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from mirror" -l admin -d 'Admin API base URL (`HOST:PORT` alone means `http://HOST:PORT`)' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from mirror" -l token-file -d 'File holding the admin bearer token' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from mirror" -l ca -d 'CA certificate (PEM) to verify an `https://` admin API against; without it, the system\'s CAs' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from mirror" -l cert -d 'Client certificate (PEM) for an admin API that asks for one (`[admin] tls.client_ca`); with --key' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from mirror" -l key -d 'The client certificate\'s private key (PEM)' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from mirror" -l json -d 'Print the API\'s JSON instead of a table'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from mirror" -s h -l help -d 'Print help'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from rollout" -l to -d 'The pool the route\'s traffic moves to' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from rollout" -l pool -d 'One rollout over every route that splits between this pool and one other (one step, one verdict, one rollback)' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from rollout" -l from -d 'With --pool: the pool traffic moves from, when routes split with several' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from rollout" -l routes -d 'With --pool: exactly these routes, e.g. web,api,ws' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from rollout" -l steps -d 'The target\'s percent at each step, ending at 100 (default 5,25,50,100)' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from rollout" -l preset -d 'all-at-once, canary-10-5m or linear-10-1m' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from rollout" -l interval -d 'Time at each step, e.g. 30s (default 30s, or the preset\'s)' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from rollout" -l watch -d 'How long the last step (100 %) watches the target, judged against its own figures from before it, e.g. 10m (default: the interval, against the baseline)' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from rollout" -l max-error-rate -d 'Roll back when the target\'s error rate passes this (0 to 1)' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from rollout" -l max-error-rate-increase -d 'Roll back when the target\'s error rate is this much above the baseline\'s (0 to 1; `off` turns the comparison off)' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from rollout" -l max-p99 -d 'Roll back when the target\'s p99 passes this, e.g. 500ms' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from rollout" -l max-p50 -d 'Roll back when the target\'s median passes this, e.g. 50ms' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from rollout" -l max-p95 -d 'Roll back when the target\'s p95 passes this, e.g. 200ms' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from rollout" -l max-4xx-rate -d 'Roll back when the target\'s share of 4xx answers passes this (0 to 1; off unless given)' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from rollout" -l max-p99-ratio -d 'Roll back when the target\'s p99 is this many times the baseline\'s (judged with --confidence; default 1.5); `off` turns the latency test off' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from rollout" -l min-p99-increase-ms -d 'A p99 at most this many ms above the baseline\'s is never a regression (default 5)' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from rollout" -l latency-quantile -d 'The quantile the latency test compares: p50 to p99.9 (default p99)' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from rollout" -l min-requests -d 'Requests the target must serve before a step is judged' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from rollout" -l check-every -d 'How often the step is judged, e.g. 5s' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from rollout" -l failure-limit -d 'Failing checks in a row that roll back (1 to 100; default 2)' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from rollout" -l max-error-ratio -d 'Roll back when the target\'s error rate is more than this many times the baseline\'s (and more than --max-error-rate-increase above it); `off` turns the ratio off' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from rollout" -l confidence -d 'The error and latency tests\' confidence, above 0.5 and at most 0.9999 (default 0.99)' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from rollout" -l max-step-wait -d 'The longest a step waits for enough requests, e.g. 5m (default three intervals)' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from rollout" -l on-inconclusive -d 'What a step that waited --max-step-wait without data does: pause, rollback or promote (default pause)' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from rollout" -l max-shadow-diff-rate -d 'When the route mirrors to the target: roll back once more than this share (0 to 1) of the compared shadow copies differ' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from rollout" -l analysis -d 'More of the `analysis` object as JSON (`@FILE` reads a file), e.g. \'{"prometheus": [{"url": "http://…:9090", "query": "…", "max": 0.1}]}\'; the flags above win' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from rollout" -l dry-run -d 'Judge this limit without acting on it (repeatable), e.g. --dry-run max_error_rate: its breaches are reported, never rolled back on' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from rollout" -l admin -d 'Admin API base URL (`HOST:PORT` alone means `http://HOST:PORT`)' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from rollout" -l token-file -d 'File holding the admin bearer token' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from rollout" -l ca -d 'CA certificate (PEM) to verify an `https://` admin API against; without it, the system\'s CAs' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from rollout" -l cert -d 'Client certificate (PEM) for an admin API that asks for one (`[admin] tls.client_ca`); with --key' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from rollout" -l key -d 'The client certificate\'s private key (PEM)' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from rollout" -l promote-on-pass -d 'Move on as soon as the error and latency tests say the target is within their tolerances, not at the end of the interval'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from rollout" -l approve-before-100 -d 'Hold before the step to 100 % until `cutover ctl promote ROUTE`'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from rollout" -l force -d 'Start even if the target has no healthy upstream'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from rollout" -l wait -d 'Follow the rollout to its end; the exit code says how it ended'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from rollout" -l json -d 'Print the API\'s JSON instead of a table'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from rollout" -s h -l help -d 'Print help'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from undo" -l pool -d 'Undo every route whose last change moved this pool\'s share' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from undo" -l admin -d 'Admin API base URL (`HOST:PORT` alone means `http://HOST:PORT`)' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from undo" -l token-file -d 'File holding the admin bearer token' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from undo" -l ca -d 'CA certificate (PEM) to verify an `https://` admin API against; without it, the system\'s CAs' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from undo" -l cert -d 'Client certificate (PEM) for an admin API that asks for one (`[admin] tls.client_ca`); with --key' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from undo" -l key -d 'The client certificate\'s private key (PEM)' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from undo" -l json -d 'Print the API\'s JSON instead of a table'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from undo" -s h -l help -d 'Print help'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from promote" -l admin -d 'Admin API base URL (`HOST:PORT` alone means `http://HOST:PORT`)' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from promote" -l token-file -d 'File holding the admin bearer token' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from promote" -l ca -d 'CA certificate (PEM) to verify an `https://` admin API against; without it, the system\'s CAs' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from promote" -l cert -d 'Client certificate (PEM) for an admin API that asks for one (`[admin] tls.client_ca`); with --key' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from promote" -l key -d 'The client certificate\'s private key (PEM)' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from promote" -l json -d 'Print the API\'s JSON instead of a table'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from promote" -s h -l help -d 'Print help'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from pause" -l admin -d 'Admin API base URL (`HOST:PORT` alone means `http://HOST:PORT`)' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from pause" -l token-file -d 'File holding the admin bearer token' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from pause" -l ca -d 'CA certificate (PEM) to verify an `https://` admin API against; without it, the system\'s CAs' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from pause" -l cert -d 'Client certificate (PEM) for an admin API that asks for one (`[admin] tls.client_ca`); with --key' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from pause" -l key -d 'The client certificate\'s private key (PEM)' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from pause" -l json -d 'Print the API\'s JSON instead of a table'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from pause" -s h -l help -d 'Print help'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from resume" -l admin -d 'Admin API base URL (`HOST:PORT` alone means `http://HOST:PORT`)' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from resume" -l token-file -d 'File holding the admin bearer token' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from resume" -l ca -d 'CA certificate (PEM) to verify an `https://` admin API against; without it, the system\'s CAs' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from resume" -l cert -d 'Client certificate (PEM) for an admin API that asks for one (`[admin] tls.client_ca`); with --key' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from resume" -l key -d 'The client certificate\'s private key (PEM)' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from resume" -l json -d 'Print the API\'s JSON instead of a table'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from resume" -s h -l help -d 'Print help'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from abort" -l admin -d 'Admin API base URL (`HOST:PORT` alone means `http://HOST:PORT`)' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from abort" -l token-file -d 'File holding the admin bearer token' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from abort" -l ca -d 'CA certificate (PEM) to verify an `https://` admin API against; without it, the system\'s CAs' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from abort" -l cert -d 'Client certificate (PEM) for an admin API that asks for one (`[admin] tls.client_ca`); with --key' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from abort" -l key -d 'The client certificate\'s private key (PEM)' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from abort" -l json -d 'Print the API\'s JSON instead of a table'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from abort" -s h -l help -d 'Print help'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from drain" -l timeout -d 'How long sticky clients may still reach it, e.g. 10m (default 30s)' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from drain" -l admin -d 'Admin API base URL (`HOST:PORT` alone means `http://HOST:PORT`)' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from drain" -l token-file -d 'File holding the admin bearer token' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from drain" -l ca -d 'CA certificate (PEM) to verify an `https://` admin API against; without it, the system\'s CAs' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from drain" -l cert -d 'Client certificate (PEM) for an admin API that asks for one (`[admin] tls.client_ca`); with --key' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from drain" -l key -d 'The client certificate\'s private key (PEM)' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from drain" -l wait -d 'Wait, showing progress, until drained'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from drain" -l json -d 'Print the API\'s JSON instead of a table'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from drain" -s h -l help -d 'Print help'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from enable" -l admin -d 'Admin API base URL (`HOST:PORT` alone means `http://HOST:PORT`)' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from enable" -l token-file -d 'File holding the admin bearer token' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from enable" -l ca -d 'CA certificate (PEM) to verify an `https://` admin API against; without it, the system\'s CAs' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from enable" -l cert -d 'Client certificate (PEM) for an admin API that asks for one (`[admin] tls.client_ca`); with --key' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from enable" -l key -d 'The client certificate\'s private key (PEM)' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from enable" -l json -d 'Print the API\'s JSON instead of a table'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from enable" -s h -l help -d 'Print help'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from disable" -l admin -d 'Admin API base URL (`HOST:PORT` alone means `http://HOST:PORT`)' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from disable" -l token-file -d 'File holding the admin bearer token' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from disable" -l ca -d 'CA certificate (PEM) to verify an `https://` admin API against; without it, the system\'s CAs' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from disable" -l cert -d 'Client certificate (PEM) for an admin API that asks for one (`[admin] tls.client_ca`); with --key' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from disable" -l key -d 'The client certificate\'s private key (PEM)' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from disable" -l json -d 'Print the API\'s JSON instead of a table'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from disable" -s h -l help -d 'Print help'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from add" -l weight -d 'Its weight within the pool' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from add" -l admin -d 'Admin API base URL (`HOST:PORT` alone means `http://HOST:PORT`)' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from add" -l token-file -d 'File holding the admin bearer token' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from add" -l ca -d 'CA certificate (PEM) to verify an `https://` admin API against; without it, the system\'s CAs' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from add" -l cert -d 'Client certificate (PEM) for an admin API that asks for one (`[admin] tls.client_ca`); with --key' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from add" -l key -d 'The client certificate\'s private key (PEM)' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from add" -l json -d 'Print the API\'s JSON instead of a table'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from remove" -l admin -d 'Admin API base URL (`HOST:PORT` alone means `http://HOST:PORT`)' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from remove" -l token-file -d 'File holding the admin bearer token' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from remove" -l ca -d 'CA certificate (PEM) to verify an `https://` admin API against; without it, the system\'s CAs' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from remove" -l cert -d 'Client certificate (PEM) for an admin API that asks for one (`[admin] tls.client_ca`); with --key' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from remove" -l key -d 'The client certificate\'s private key (PEM)' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from remove" -l wait -d 'Wait, showing progress, until it is gone'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from remove" -l json -d 'Print the API\'s JSON instead of a table'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from health" -l admin -d 'Admin API base URL (`HOST:PORT` alone means `http://HOST:PORT`)' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from health" -l token-file -d 'File holding the admin bearer token' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from health" -l ca -d 'CA certificate (PEM) to verify an `https://` admin API against; without it, the system\'s CAs' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from health" -l cert -d 'Client certificate (PEM) for an admin API that asks for one (`[admin] tls.client_ca`); with --key' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from health" -l key -d 'The client certificate\'s private key (PEM)' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from health" -l json -d 'Print the API\'s JSON instead of a table'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from health" -s h -l help -d 'Print help'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from audit" -l limit -d 'How many entries, newest last' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from audit" -l admin -d 'Admin API base URL (`HOST:PORT` alone means `http://HOST:PORT`)' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from audit" -l token-file -d 'File holding the admin bearer token' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from audit" -l ca -d 'CA certificate (PEM) to verify an `https://` admin API against; without it, the system\'s CAs' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from audit" -l cert -d 'Client certificate (PEM) for an admin API that asks for one (`[admin] tls.client_ca`); with --key' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from audit" -l key -d 'The client certificate\'s private key (PEM)' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from audit" -l json -d 'Print the API\'s JSON instead of a table'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from audit" -s h -l help -d 'Print help'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from reload" -l admin -d 'Admin API base URL (`HOST:PORT` alone means `http://HOST:PORT`)' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from reload" -l token-file -d 'File holding the admin bearer token' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from reload" -l ca -d 'CA certificate (PEM) to verify an `https://` admin API against; without it, the system\'s CAs' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from reload" -l cert -d 'Client certificate (PEM) for an admin API that asks for one (`[admin] tls.client_ca`); with --key' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from reload" -l key -d 'The client certificate\'s private key (PEM)' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from reload" -l json -d 'Print the API\'s JSON instead of a table'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from reload" -s h -l help -d 'Print help'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from upgrade" -l admin -d 'Admin API base URL (`HOST:PORT` alone means `http://HOST:PORT`)' -r
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from upgrade" -l token-file -d 'File holding the admin bearer token' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from upgrade" -l ca -d 'CA certificate (PEM) to verify an `https://` admin API against; without it, the system\'s CAs' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from upgrade" -l cert -d 'Client certificate (PEM) for an admin API that asks for one (`[admin] tls.client_ca`); with --key' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from upgrade" -l key -d 'The client certificate\'s private key (PEM)' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from upgrade" -l json -d 'Print the API\'s JSON instead of a table'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from upgrade" -s h -l help -d 'Print help'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "status" -d 'Routes with their configured and effective split, mirrors, and every upstream\'s state and in-flight count'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "split" -d 'Set a route\'s split: `cutover ctl split app blue=90 green=10`'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "mirror" -d 'Copy a share of a route\'s requests to a pool and compare its answers with the clients\': `cutover ctl mirror app green=10` (0 stops it)'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "rollout" -d 'Progressive shift to a pool, judged on live traffic, rolled back by itself on a breach. With --wait: one line per event; exit 0 promoted, 2 rolled back, 3 aborted, 1 error'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "undo" -d 'Put a route\'s split back to what it was before its last change (a promoted rollout, a split set by hand); --pool: every route whose last change moved the pool\'s share. Refused if the split moved since'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "promote" -d 'Approve a rollout waiting for approval, or skip the rest of its step'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "pause" -d 'Hold a rollout at its step (analysis stops; the split stays)'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "resume" -d 'Go on with a paused rollout'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "abort" -d 'Stop a rollout and return to the split it started from'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "drain" -d 'No new requests to an upstream (or every upstream of a pool); in-flight ones finish'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "enable" -d 'Back into rotation (clears disable and drain)'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "disable" -d 'Out of rotation now'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "add" -d 'Add an upstream to a pool'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "remove" -d 'Remove an upstream from a pool: it drains first, then leaves'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "health" -d 'Whether every upstream of a pool is healthy (in rotation: not unhealthy, ejected, disabled or draining); exit 0 if so, 5 if not — a deploy script\'s guard before it moves traffic'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "audit" -d 'The last entries of the audit log: who changed what, and how it ended'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "reload" -d 'Re-read the config file'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "upgrade" -d 'Binary upgrade: a new process takes the listening sockets'
complete -c cutover -n "__fish_cutover_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cutover -n "__fish_cutover_using_subcommand demo" -l listen -d 'Where the proxy listens' -r
complete -c cutover -n "__fish_cutover_using_subcommand demo" -l admin -d 'Where the admin API listens' -r
complete -c cutover -n "__fish_cutover_using_subcommand demo" -l bad-green -d 'Make the green app fail this percent of its requests (a bad release, to watch a rollout roll back); change it later with `curl GREEN/demo/fail?percent=N`' -r
complete -c cutover -n "__fish_cutover_using_subcommand demo" -l traffic -d 'Requests per second the demo sends through the proxy itself, so rollouts have traffic to judge (0: none)' -r
complete -c cutover -n "__fish_cutover_using_subcommand demo" -l state -d 'Keep the demo\'s runtime changes in this directory and resume from it next time (default: a fresh directory under the system temp dir, removed when the demo stops: every run starts on blue)' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand demo" -s h -l help -d 'Print help'
complete -c cutover -n "__fish_cutover_using_subcommand completions" -s h -l help -d 'Print help'
complete -c cutover -n "__fish_cutover_using_subcommand manpage" -l dir -d 'Write each page to a file of its own in this directory' -r -F
complete -c cutover -n "__fish_cutover_using_subcommand manpage" -s h -l help -d 'Print help'
complete -c cutover -n "__fish_cutover_using_subcommand help; and not __fish_seen_subcommand_from run check ctl demo completions manpage help" -f -a "run" -d 'Run the proxy'
complete -c cutover -n "__fish_cutover_using_subcommand help; and not __fish_seen_subcommand_from run check ctl demo completions manpage help" -f -a "check" -d 'Validate a config file and exit: 0 if valid, 1 with every problem'
complete -c cutover -n "__fish_cutover_using_subcommand help; and not __fish_seen_subcommand_from run check ctl demo completions manpage help" -f -a "ctl" -d 'Admin client: status, split, rollout, mirror, drain, enable, disable, add, remove, reload…'
complete -c cutover -n "__fish_cutover_using_subcommand help; and not __fish_seen_subcommand_from run check ctl demo completions manpage help" -f -a "demo" -d 'Zero-setup tour: two demo apps and the proxy on loopback'
complete -c cutover -n "__fish_cutover_using_subcommand help; and not __fish_seen_subcommand_from run check ctl demo completions manpage help" -f -a "completions" -d 'Print a shell completion script: `cutover completions bash > /etc/bash_completion.d/cutover`'
complete -c cutover -n "__fish_cutover_using_subcommand help; and not __fish_seen_subcommand_from run check ctl demo completions manpage help" -f -a "manpage" -d 'Print the man pages (roff) as one document: `cutover manpage > cutover.1`; with --dir, write one page per command instead (cutover.1, cutover-ctl.1, cutover-ctl-rollout.1, …), as the Debian package installs them'
complete -c cutover -n "__fish_cutover_using_subcommand help; and not __fish_seen_subcommand_from run check ctl demo completions manpage help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cutover -n "__fish_cutover_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "status" -d 'Routes with their configured and effective split, mirrors, and every upstream\'s state and in-flight count'
complete -c cutover -n "__fish_cutover_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "split" -d 'Set a route\'s split: `cutover ctl split app blue=90 green=10`'
complete -c cutover -n "__fish_cutover_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "mirror" -d 'Copy a share of a route\'s requests to a pool and compare its answers with the clients\': `cutover ctl mirror app green=10` (0 stops it)'
complete -c cutover -n "__fish_cutover_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "rollout" -d 'Progressive shift to a pool, judged on live traffic, rolled back by itself on a breach. With --wait: one line per event; exit 0 promoted, 2 rolled back, 3 aborted, 1 error'
complete -c cutover -n "__fish_cutover_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "undo" -d 'Put a route\'s split back to what it was before its last change (a promoted rollout, a split set by hand); --pool: every route whose last change moved the pool\'s share. Refused if the split moved since'
complete -c cutover -n "__fish_cutover_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "promote" -d 'Approve a rollout waiting for approval, or skip the rest of its step'
complete -c cutover -n "__fish_cutover_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "pause" -d 'Hold a rollout at its step (analysis stops; the split stays)'
complete -c cutover -n "__fish_cutover_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "resume" -d 'Go on with a paused rollout'
complete -c cutover -n "__fish_cutover_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "abort" -d 'Stop a rollout and return to the split it started from'
complete -c cutover -n "__fish_cutover_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "drain" -d 'No new requests to an upstream (or every upstream of a pool); in-flight ones finish'
complete -c cutover -n "__fish_cutover_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "enable" -d 'Back into rotation (clears disable and drain)'
complete -c cutover -n "__fish_cutover_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "disable" -d 'Out of rotation now'
complete -c cutover -n "__fish_cutover_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "add" -d 'Add an upstream to a pool'
complete -c cutover -n "__fish_cutover_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "remove" -d 'Remove an upstream from a pool: it drains first, then leaves'
complete -c cutover -n "__fish_cutover_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "health" -d 'Whether every upstream of a pool is healthy (in rotation: not unhealthy, ejected, disabled or draining); exit 0 if so, 5 if not — a deploy script\'s guard before it moves traffic'
complete -c cutover -n "__fish_cutover_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "audit" -d 'The last entries of the audit log: who changed what, and how it ended'
complete -c cutover -n "__fish_cutover_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "reload" -d 'Re-read the config file'
complete -c cutover -n "__fish_cutover_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "upgrade" -d 'Binary upgrade: a new process takes the listening sockets'
