package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// Stranded containers. An engine that starts while meshnetd is down tries
// to start the containers it should restart (policy "always" or
// "unless-stopped"); those on a meshnet network fail, because the driver
// does not answer, and the engine records the error and never tries
// again. Once the driver is back, the watcher starts them, as the engine
// would have: a container with such a policy and a recorded start error
// is one the engine meant to run. Containers stopped by hand carry no
// error and are left alone.

// RestartStranded makes Run start, after every (re)connection to the
// engine, the stranded containers on networks of driver. Call before Run.
func (w *Watcher) RestartStranded(driver string) { w.strandedDriver = driver }

func (w *Watcher) restartStranded(ctx context.Context) {
	ids, err := w.client.strandedContainers(ctx, w.strandedDriver)
	if err != nil {
		w.log.Warn("looking for containers the engine failed to restart", "err", err)
		return
	}
	for _, c := range ids {
		if err := w.client.start(ctx, c.ID); err != nil {
			w.log.Warn("restarting a container the engine left stopped", "container", c.Name, "err", err)
			continue
		}
		w.log.Info("restarted a container the engine left stopped while the driver was down", "container", c.Name, "engine_error", c.Error)
	}
}

type strandedContainer struct{ ID, Name, Error string }

type dockerStrandedInspect struct {
	ID         string `json:"Id"`
	Name       string `json:"Name"`
	HostConfig *struct {
		RestartPolicy struct {
			Name string `json:"Name"`
		} `json:"RestartPolicy"`
	} `json:"HostConfig"`
	State *struct {
		Running    bool   `json:"Running"`
		Restarting bool   `json:"Restarting"`
		Error      string `json:"Error"`
	} `json:"State"`
	NetworkSettings *struct {
		Networks map[string]*dockerEndpoint `json:"Networks"`
	} `json:"NetworkSettings"`
}

// strandedContainers lists stopped containers with a restart policy, a
// recorded start error and an endpoint on a network of driver.
func (c *dockerClient) strandedContainers(ctx context.Context, driver string) ([]strandedContainer, error) {
	var nets []struct {
		ID     string `json:"Id"`
		Driver string `json:"Driver"`
	}
	if err := c.get(ctx, "/networks", nil, &nets); err != nil {
		return nil, err
	}
	ours := map[string]bool{}
	for _, n := range nets {
		if driverIs(n.Driver, driver) {
			ours[n.ID] = true
		}
	}
	if len(ours) == 0 {
		return nil, nil
	}
	var list []struct {
		ID string `json:"Id"`
	}
	q := url.Values{"all": {"1"}, "filters": {`{"status":["exited","created"]}`}}
	if err := c.get(ctx, "/containers/json", q, &list); err != nil {
		return nil, err
	}
	var out []strandedContainer
	for _, s := range list {
		var in dockerStrandedInspect
		if err := c.get(ctx, "/containers/"+url.PathEscape(s.ID)+"/json", nil, &in); err != nil {
			continue // removed meanwhile
		}
		if stranded(in, ours) {
			out = append(out, strandedContainer{ID: in.ID, Name: strings.TrimPrefix(in.Name, "/"), Error: in.State.Error})
		}
	}
	return out, nil
}

// driverIs matches a network's driver against a plugin name: "meshnet"
// run by hand, or a managed plugin's reference ("meshnet:latest",
// "registry.example/ops/meshnet:1.2").
func driverIs(netDriver, name string) bool {
	if i := strings.LastIndex(netDriver, "/"); i >= 0 {
		netDriver = netDriver[i+1:]
	}
	netDriver, _, _ = strings.Cut(netDriver, ":")
	return netDriver == name
}

func stranded(in dockerStrandedInspect, networks map[string]bool) bool {
	if in.HostConfig == nil || in.State == nil || in.NetworkSettings == nil {
		return false
	}
	if !slices.Contains([]string{"always", "unless-stopped"}, in.HostConfig.RestartPolicy.Name) ||
		in.State.Running || in.State.Restarting || in.State.Error == "" {
		return false
	}
	for _, ep := range in.NetworkSettings.Networks {
		if ep != nil && networks[ep.NetworkID] {
			return true
		}
	}
	return false
}

// start starts a container; one already running is fine.
func (c *dockerClient) start(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, dockerStartTimeout)
	defer cancel()
	resp, err := c.request(ctx, http.MethodPost, "/containers/"+url.PathEscape(id)+"/start", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusNotModified {
		return nil
	}
	var e struct {
		Message string `json:"message"`
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if json.Unmarshal(body, &e) != nil || e.Message == "" {
		e.Message = strings.TrimSpace(string(body))
	}
	return fmt.Errorf("docker: start %s: %s: %s", id, resp.Status, e.Message)
}
