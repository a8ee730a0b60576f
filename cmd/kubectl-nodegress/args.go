package main

import (
	"fmt"
	"strings"

	"github.com/spf13/pflag"
)

// splitArgs separates the plugin's own flags (those defined in fs) from
// everything else, which goes to the agent's command unchanged and in
// order. The plugin never needs to know the agent's flags, so flags added
// to `nodegress trace` work through it without a change here. Since the
// agent's commands take no positional arguments, a value of a flag the
// plugin does not know needs no special handling: it travels next to its
// flag. Everything after "--" is the agent's.
//
// Own flags are recognised as --name, --name=value, -x, -x=value and, as
// Go's flag package (and so the agent) also accepts, -name and -name=value.
// A value glued to a shorthand (-nNS) is not: -service would read as
// -s ervice.
func splitArgs(fs *pflag.FlagSet, args []string) (own, rest []string, err error) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return own, append(rest, args[i+1:]...), nil
		}
		f, value, hasValue := lookupOwn(fs, a)
		if f == nil {
			rest = append(rest, a)
			continue
		}
		if !hasValue && f.NoOptDefVal == "" {
			if i+1 == len(args) {
				return nil, nil, fmt.Errorf("flag --%s needs a value", f.Name)
			}
			i++
			value, hasValue = args[i], true
		}
		if hasValue {
			own = append(own, "--"+f.Name+"="+value)
		} else {
			own = append(own, "--"+f.Name)
		}
	}
	return own, rest, nil
}

// lookupOwn returns the flag of fs that arg names, if any, and its value
// when arg carries one.
func lookupOwn(fs *pflag.FlagSet, arg string) (f *pflag.Flag, value string, hasValue bool) {
	if len(arg) < 2 || arg[0] != '-' {
		return nil, "", false
	}
	name := strings.TrimPrefix(strings.TrimPrefix(arg, "-"), "-")
	name, value, hasValue = strings.Cut(name, "=")
	if name == "" {
		return nil, "", false
	}
	if f = fs.Lookup(name); f != nil {
		return f, value, hasValue
	}
	// A shorthand: -n NS or -n=NS (never with two dashes).
	if arg[1] == '-' || len(name) != 1 {
		return nil, "", false
	}
	if f = fs.ShorthandLookup(name); f == nil {
		return nil, "", false
	}
	return f, value, hasValue
}
