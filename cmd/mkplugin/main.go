// Command mkplugin writes meshnet's Docker managed-plugin bundle (see
// internal/pluginbundle): `make plugin` runs it as
//
//	mkplugin -o build/plugin bin/meshnetd bin/meshctl
//
// and `docker plugin create meshnet build/plugin` installs the result.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/meshnet/meshnet/internal/pluginbundle"
)

func main() {
	out := flag.String("o", "build/plugin", "bundle directory to write (config.json and rootfs/)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "Usage: mkplugin [-o DIR] STATIC-BINARY...\n\nWrites a Docker managed-plugin bundle for meshnet.\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if err := pluginbundle.Write(*out, flag.Args()); err != nil {
		fmt.Fprintf(os.Stderr, "mkplugin: %v\n", err)
		os.Exit(1)
	}
}
