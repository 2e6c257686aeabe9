package gossip

import "fmt"

// checkValue rejects a peer's record whose value would make a consumer
// fail or misbehave: it runs where records enter the store (Merge), so
// that one bad record is dropped once here instead of reaching the
// dataplane, DNS or IPAM of every node at the same moment. It checks with
// the parsers every consumer reads through (decode.go), so a record that
// enters is one every consumer takes. Tombstones carry no value; ipam's
// kinds are checked where they are read (ParseBlock, ParsePool,
// ParseRequest), as before: a bad one is skipped by ipam only.
func checkValue(r Record) error {
	if r.Deleted {
		return nil
	}
	var err error
	switch r.Kind {
	case KindNode:
		_, err = ParseNode(r)
	case KindNetwork:
		_, err = ParseNetwork(r)
	case KindEndpoint:
		_, err = ParseEndpoint(r)
	case KindRemoval:
		_, err = ParseRemoval(r)
	case KindVIP:
		_, err = ParseVIP(r)
	}
	if err != nil {
		return fmt.Errorf("%s record %s: %w", r.Kind, r.Key, err)
	}
	return nil
}
