package bench

import "testing"

func TestServiceRows(t *testing.T) {
	rows := ServiceRows(ServiceFigures{Spread: map[string]int{"a": 48, "b": 52}, FailoverSeconds: 0.05})
	if len(rows) != 2 {
		t.Fatalf("%d rows", len(rows))
	}
	if r := rows[0]; r.Meshnet == nil || *r.Meshnet != 52 || r.Met == nil || !*r.Met {
		t.Errorf("spread row %+v: want 52%%, met", r)
	}
	if r := rows[1]; r.Meshnet == nil || *r.Meshnet != 0.05 || r.Met == nil || !*r.Met {
		t.Errorf("failover row %+v: want 0.05 s, met", r)
	}
	rows = ServiceRows(ServiceFigures{Spread: map[string]int{"a": 70, "b": 30}, FailoverSeconds: 2})
	if *rows[0].Met || *rows[1].Met {
		t.Errorf("70/30 and 2 s must miss their targets: %+v", rows)
	}
	for _, r := range ServiceRows(ServiceFigures{Err: "no hosts"}) {
		if r.Meshnet != nil || r.MeshnetErr == "" {
			t.Errorf("unavailable row %+v", r)
		}
	}
}
