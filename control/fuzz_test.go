package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

// fuzzBackend answers everything and refuses only as a user error, so any
// 500 the handler gives is its own fault.
type fuzzBackend struct{ keyFake }

func (f *fuzzBackend) RemovePeer(_ context.Context, req RemovePeerRequest) error {
	if req.Node == "a" {
		return UserError{errors.New("node a is alive")}
	}
	return nil
}

var fuzzRoutes = []string{"/v1/peers", "/v1/status", "/v1/networks", "/v1/endpoints", "/v1/services",
	"/v1/version", "/v1/lookup", "/v1/rmpeer", "/v1/keys", "/", "/v1/", "/v1/keys/x"}

// FuzzHandler sends arbitrary requests to the control API: nothing panics,
// no request is the daemon's fault (500), and every reply is JSON, with an
// error message whenever the status is not 2xx.
// Run it for real with: go test ./control/ -run XXX -fuzz FuzzHandler
func FuzzHandler(f *testing.F) {
	f.Add(true, uint8(7), "", []byte(`{"node":"b"}`))
	f.Add(true, uint8(7), "", []byte(`{"node":"a"}`))
	f.Add(true, uint8(8), "", []byte(`{"op":"install","key":"bWVzaG5ldA=="}`))
	f.Add(true, uint8(8), "", []byte(`{"op":"remove","key":"primary"}`))
	f.Add(false, uint8(8), "", []byte(nil))
	f.Add(false, uint8(6), "name=api.meshnet&type=A", []byte(nil))
	f.Add(false, uint8(6), "name=%zz", []byte(nil))
	f.Add(true, uint8(7), "", []byte(`{"node":"b"} trailing`))
	f.Fuzz(func(t *testing.T, post bool, route uint8, query string, body []byte) {
		method := http.MethodGet
		if post {
			method = http.MethodPost
		}
		u := &url.URL{Path: fuzzRoutes[int(route)%len(fuzzRoutes)], RawQuery: query}
		req := httptest.NewRequest(method, "http://meshnetd/", bytes.NewReader(body))
		req.URL = u
		rec := httptest.NewRecorder()
		NewHandler(&fuzzBackend{}, nil).ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %s: %d %s", method, u, rec.Code, rec.Body.String())
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Fatalf("%s %s: Content-Type %q", method, u, ct)
		}
		if !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("%s %s: reply is not JSON: %q", method, u, rec.Body.String())
		}
		if rec.Code/100 != 2 {
			var e Error
			if json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Error == "" {
				t.Fatalf("%s %s: status %d without an error message: %s", method, u, rec.Code, rec.Body.String())
			}
		}
	})
}
