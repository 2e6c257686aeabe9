// Command mkrelease writes meshnet's release artifacts (see
// internal/release): `make release` builds the static binaries for each
// architecture and runs
//
//	mkrelease -version VERSION -o build/release amd64=DIR arm64=DIR
//
// where each DIR holds meshnetd and meshctl built for that GOARCH.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/meshnet/meshnet/internal/release"
)

func main() {
	out := flag.String("o", "build/release", "folder to write (emptied first)")
	version := flag.String("version", "", "the release's version, as stamped into the binaries (git describe)")
	root := flag.String("root", ".", "the repository: deploy/systemd, README.md, LICENSE")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "Usage: mkrelease -version V [-o DIR] GOARCH=BINDIR...\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	bins := map[string]string{}
	for _, a := range flag.Args() {
		arch, dir, ok := strings.Cut(a, "=")
		if !ok {
			fmt.Fprintf(os.Stderr, "mkrelease: %q: give GOARCH=DIR (e.g. amd64=build/stage/amd64)\n", a)
			os.Exit(2)
		}
		bins[arch] = dir
	}
	if *version == "" || len(bins) == 0 {
		flag.Usage()
		os.Exit(2)
	}
	names, err := release.Build(*out, *version, *root, bins)
	if err != nil {
		fmt.Fprintf(os.Stderr, "mkrelease: %v\n", err)
		os.Exit(1)
	}
	for _, n := range names {
		fmt.Println(*out + "/" + n)
	}
}
