package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

const channelCreateHelp = `Creates channel NAME through the internal HTTP API (PUT
/v1/channels/NAME) and prints the answer, {"channel","created"}:
created is false when it existed already (its configuration is then
unchanged). Zero flags take the gateway's defaults.
`

const channelInfoHelp = `Describes channel NAME through the internal HTTP API (GET
/v1/channels/NAME): length, first_id, last_id, max_len, retention,
created, as one JSON line.
`

func apiFlag(fs *flag.FlagSet) *string {
	return fs.String("api", defaultAPI, "the gateway's internal HTTP API `URL`")
}

func runChannelCreate(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("channel create", flag.ContinueOnError)
	api := apiFlag(fs)
	maxLen := fs.Int("max-len", 0, "messages kept (0: the gateway's default)")
	retention := fs.Duration("retention", 0, "how long messages are kept (0: the gateway's default)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want one channel NAME")
	}
	if *maxLen < 0 || *retention < 0 {
		return usagef("--max-len and --retention must not be negative")
	}
	body := map[string]any{}
	if *maxLen > 0 {
		body["max_len"] = *maxLen
	}
	if *retention > 0 {
		body["retention"] = retention.String()
	}
	b, _ := json.Marshal(body)
	return callAPI(ctx, e, http.MethodPut, *api, pos[0], b)
}

func runChannelInfo(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("channel info", flag.ContinueOnError)
	api := apiFlag(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want one channel NAME")
	}
	return callAPI(ctx, e, http.MethodGet, *api, pos[0], nil)
}

// callAPI calls the channel's route and prints the JSON answer; an error
// answer ({"code","message"}) is returned as an error.
func callAPI(ctx context.Context, e *env, method, api, channel string, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	u := strings.TrimSuffix(api, "/") + "/v1/channels/" + url.PathEscape(channel)
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if cred := e.getenv("TSLM_CREDENTIAL"); cred != "" {
		req.Header.Set("Authorization", "Bearer "+cred)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var apiErr struct{ Code, Message string }
		if json.Unmarshal(b, &apiErr) == nil && apiErr.Code != "" {
			return fmt.Errorf("%s: %s (HTTP %d)", apiErr.Code, apiErr.Message, resp.StatusCode)
		}
		return fmt.Errorf("HTTP %s: %s", resp.Status, bytes.TrimSpace(b))
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, b); err != nil {
		return fmt.Errorf("the API answered something that is not JSON: %.80q", b)
	}
	compact.WriteByte('\n')
	_, err = e.stdout.Write(compact.Bytes())
	return err
}
