package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"
)

// Gossip key rotation (meshctl keys): GET /v1/keys lists every node's
// keyring, POST /v1/keys {"op":"install|use|remove|list","key":BASE64}
// changes them cluster-wide. A reply lists every node's answer; the call
// succeeds (200) when the daemon ran the operation, even if some nodes
// failed or were down: each node's error is in its row.

// KeyBackend is what the daemon implements for key rotation. It is apart
// from Backend so that a backend without it still serves the rest (the
// calls then answer 501).
type KeyBackend interface {
	Keys(ctx context.Context, req KeysRequest) (KeysReply, error)
}

// KeysRequest asks for a keyring operation.
type KeysRequest struct {
	Op  string `json:"op"`            // install, use, remove or list
	Key string `json:"key,omitempty"` // base64, as meshctl keygen prints it
}

// KeysReply is every node's answer to a keyring operation.
type KeysReply struct {
	Op    string    `json:"op"`
	Nodes []KeyNode `json:"nodes"`
	// Keys counts, for every key seen, on how many nodes it is installed
	// and on how many it is the primary (the one that encrypts).
	Keys []KeyUse `json:"keys"`
}

// KeyNode is one node's answer.
type KeyNode struct {
	Node    string   `json:"node"`
	OK      bool     `json:"ok"`
	Error   string   `json:"error,omitempty"`
	Primary string   `json:"primary,omitempty"` // base64
	Keys    []string `json:"keys,omitempty"`    // base64, primary first
}

// KeyUse is one key's spread over the nodes that answered.
type KeyUse struct {
	Key       string `json:"key"`
	Installed int    `json:"installed"`
	Primary   int    `json:"primary"`
}

// Failed counts the nodes that did not apply the operation.
func (r KeysReply) Failed() int {
	n := 0
	for _, k := range r.Nodes {
		if !k.OK {
			n++
		}
	}
	return n
}

func registerKeys(mux *http.ServeMux, b Backend, log *slog.Logger) {
	kb, _ := b.(KeyBackend)
	serve := func(w http.ResponseWriter, r *http.Request, req KeysRequest) {
		if kb == nil {
			reply(w, http.StatusNotImplemented, Error{Error: "this meshnetd does not support key rotation"})
			return
		}
		res, err := kb.Keys(r.Context(), req)
		if err != nil {
			replyErr(w, log, err)
			return
		}
		reply(w, http.StatusOK, res)
	}
	mux.HandleFunc("GET /v1/keys", func(w http.ResponseWriter, r *http.Request) {
		serve(w, r, KeysRequest{Op: "list"})
	})
	mux.HandleFunc("POST /v1/keys", func(w http.ResponseWriter, r *http.Request) {
		var req KeysRequest
		if err := decodeRequest(w, r, &req); err != nil {
			replyErr(w, log, UserError{fmt.Errorf("malformed keys request: %w", err)})
			return
		}
		switch req.Op {
		case "install", "use", "remove":
			if req.Key == "" {
				replyErr(w, log, UserError{fmt.Errorf("keys %s needs a key: meshctl keys %s KEY", req.Op, req.Op)})
				return
			}
		case "list":
		default:
			replyErr(w, log, UserError{fmt.Errorf("unknown keys operation %q: use install, use, remove or list", req.Op)})
			return
		}
		serve(w, r, req)
	})
}

// decodeRequest reads one JSON object of at most maxRequestBytes with no
// unknown fields and nothing after it.
func decodeRequest(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("data after the JSON object")
	}
	return nil
}

// keysTimeout covers a remove: a list round and a remove round, each
// waiting up to the daemon's key timeout for members that do not answer.
const keysTimeout = 30 * time.Second

// Keys runs a keyring operation ("list" with an empty key).
func (c *Client) Keys(ctx context.Context, op, key string) (KeysReply, error) {
	hc := *c.http
	hc.Timeout = keysTimeout
	slow := &Client{socket: c.socket, http: &hc}
	var v KeysReply
	if op == "list" {
		return v, slow.get(ctx, "/v1/keys", &v)
	}
	body, _ := json.Marshal(KeysRequest{Op: op, Key: key})
	return v, slow.do(ctx, http.MethodPost, "/v1/keys", bytes.NewReader(body), &v)
}
