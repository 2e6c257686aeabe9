package main

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"strings"

	"github.com/meshnet/meshnet/control"
)

const keysUsage = `meshctl keys list            every node's gossip keys; which one encrypts
meshctl keys install KEY     every node accepts KEY (step 1 of a rotation)
meshctl keys use KEY         every node encrypts with KEY (step 2)
meshctl keys remove KEY      every node drops KEY (step 3; never the primary key)`

// runKeys drives a gossip key rotation across the cluster (like consul
// keyring / serf keys). It fails when any node did not apply the step, so
// a script stops before the next one.
func runKeys(ctx context.Context, c *control.Client, args []string, o options, w io.Writer) error {
	if len(args) == 0 {
		return usageError{"keys needs an operation:\n" + keysUsage}
	}
	op, key := args[0], ""
	switch op {
	case "list":
		if len(args) != 1 {
			return usageError{"keys list takes no arguments"}
		}
	case "install", "use", "remove":
		if len(args) != 2 {
			return usageError{fmt.Sprintf("keys %s takes one key (base64, from meshctl keygen):\n%s", op, keysUsage)}
		}
		key = args[1]
	default:
		return usageError{fmt.Sprintf("unknown keys operation %q:\n%s", op, keysUsage)}
	}
	res, err := c.Keys(ctx, op, key)
	if err != nil {
		return err
	}
	if o.output == "json" {
		if err := printJSON(w, res); err != nil {
			return err
		}
	} else if err := printKeys(w, res); err != nil {
		return err
	}
	if n := res.Failed(); n > 0 {
		return fmt.Errorf("keys %s: %d of %d nodes did not apply it (see above); rerun once they are up", op, n, len(res.Nodes))
	}
	return nil
}

func printKeys(w io.Writer, res control.KeysReply) error {
	tw := table(w)
	fmt.Fprintln(tw, "NODE\tRESULT\tPRIMARY\tKEYS\t")
	for _, n := range res.Nodes {
		result := "ok"
		if !n.OK {
			result = "FAILED: " + n.Error
		}
		ids := make([]string, 0, len(n.Keys))
		for _, k := range n.Keys {
			ids = append(ids, keyID(k))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", n.Node, result, dash(keyID(n.Primary)), dash(strings.Join(ids, ",")))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(res.Keys) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw = table(w)
	fmt.Fprintln(tw, "KEY\tID\tINSTALLED\tPRIMARY\t")
	for _, k := range res.Keys {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t\n", k.Key, keyID(k.Key), k.Installed, k.Primary)
	}
	return tw.Flush()
}

// keyID is the short name the daemon logs a key by (gossip.KeyID): the
// start of the SHA-256 of its bytes.
func keyID(b64 string) string {
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(raw) == 0 {
		return ""
	}
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:4])
}
