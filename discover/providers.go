package discover

import (
	"github.com/hashicorp/go-discover/provider/aws"
	"github.com/hashicorp/go-discover/provider/gce"
)

// Builtin returns the cloud providers meshnetd links: AWS (instances by tag,
// EC2 or ECS) and GCE (instances by tag, zone pattern or project). Each
// pulls in its cloud's SDK, so providers are added here one at a time as
// operators need them, rather than go-discover's whole set.
func Builtin() map[string]Provider {
	return map[string]Provider{
		"aws": &aws.Provider{},
		"gce": &gce.Provider{},
	}
}
