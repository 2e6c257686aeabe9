package gossip

import (
	"github.com/hashicorp/memberlist"
)

// delegate is memberlist's Delegate. Its methods are called from
// memberlist's packet and push/pull goroutines: they must not block, and
// they must be safe for concurrent use. Records only pass through: they
// are decoded here and merged by mergeLoop (inbound.go).
type delegate struct{ c *Cluster }

var _ memberlist.Delegate = (*delegate)(nil)

func (d *delegate) NodeMeta(limit int) []byte {
	if d.c.leaving.Load() {
		return metaLeaving
	}
	return nodeKeyMeta(d.c.store.PublicKey(), limit)
}

func (d *delegate) NotifyMsg(buf []byte) {
	if len(buf) > 0 && (buf[0] == msgKeyRequest || buf[0] == msgKeyReply) {
		d.c.notifyKeyMsg(buf)
		return
	}
	if len(buf) > 0 && (buf[0] == msgSightRequest || buf[0] == msgSightReply) {
		d.c.notifySightMsg(buf)
		return
	}
	recs, err := DecodeMessage(buf)
	if err != nil {
		d.c.log.Warn("dropping a gossip message", "err", err)
		return
	}
	d.c.enqueueMessage(recs) // merged by mergeLoop (inbound.go)
}

func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.c.queue.GetBroadcasts(overhead, limit)
}

func (d *delegate) LocalState(join bool) []byte {
	buf, err := EncodeState(d.c.store.All())
	if err != nil {
		d.c.log.Error("encoding state for push/pull", "err", err)
		return nil
	}
	return buf
}

func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	recs, err := DecodeState(buf)
	if err != nil {
		d.c.log.Warn("dropping a peer's push/pull state", "err", err)
		return
	}
	d.c.enqueueState(recs) // merged by mergeLoop (inbound.go)
}
