package gateway

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tslm/tslm/broker"
	"github.com/tslm/tslm/httpapi"
	"github.com/tslm/tslm/internal/histogram"
	"github.com/tslm/tslm/ws"
)

// collector exposes the hub's and servers' own counters at scrape time, so
// the hot paths count with plain atomics and never touch Prometheus.
type collector struct {
	hub     *broker.Hub
	servers map[string]*ws.Server
	api     *httpapi.API // on the internal listener
	budget  *ws.SendBudget
}

var (
	descChannels      = prometheus.NewDesc("tslm_channels_followed", "Channels with local subscribers.", nil, nil)
	descSubscriptions = prometheus.NewDesc("tslm_subscriptions", "Open subscriptions.", nil, nil)
	descDelivered     = prometheus.NewDesc("tslm_messages_delivered_total", "Messages connections took, replays included.", nil, nil)
	descReplayBytes   = prometheus.NewDesc("tslm_replay_bytes", "Bytes replays hold of the TSLM_REPLAY_BYTES budget.", nil, nil)
	descOverflows     = prometheus.NewDesc("tslm_replay_overflows_total", "Replays overtaken by live traffic (re-read from the backlog, or ended as slow consumers).", nil, nil)
	descReplayRefused = prometheus.NewDesc("tslm_replay_refused_total", "Subscriptions refused or ended for lack of replay capacity.", nil, nil)
	descGaps          = prometheus.NewDesc("tslm_gaps_total", "Gap notices sent to subscribers.", nil, nil)
	descReadErrors    = prometheus.NewDesc("tslm_backlog_read_errors_total", "Failed backlog reads.", nil, nil)
	descSessions      = prometheus.NewDesc("tslm_sessions", "Request sessions open on this replica.", nil, nil)
	descPending       = prometheus.NewDesc("tslm_requests_pending", "Requests local sessions await.", nil, nil)
	descReplies       = prometheus.NewDesc("tslm_replies_total", "Replies delivered to requesters.", nil, nil)
	descRefusals      = prometheus.NewDesc("tslm_refusals_total", "Responder refusals delivered to requesters.", nil, nil)
	descTimeouts      = prometheus.NewDesc("tslm_request_timeouts_total", "Requests answered with a timeout.", nil, nil)
	descDropped       = prometheus.NewDesc("tslm_replies_dropped_total", "Inbox entries dropped: malformed, or answering no request awaited (late, duplicate).", nil, nil)
	descServings      = prometheus.NewDesc("tslm_servings", "Channels served by connections to this replica (one per connection and channel).", nil, nil)
	descOpen          = prometheus.NewDesc("tslm_connections", "Open WebSocket connections.", []string{"listener"}, nil)
	descAccepted      = prometheus.NewDesc("tslm_connections_accepted_total", "WebSocket connections accepted.", []string{"listener"}, nil)
	descStreams       = prometheus.NewDesc("tslm_sse_streams", "Open Server-Sent Events streams (GET /v1/sse).", []string{"listener"}, nil)
	descStreamsTotal  = prometheus.NewDesc("tslm_sse_streams_accepted_total", "Server-Sent Events streams started.", []string{"listener"}, nil)
	descCommands      = prometheus.NewDesc("tslm_commands_total", "Client commands received.", []string{"listener"}, nil)
	descCloses        = prometheus.NewDesc("tslm_server_closes_total", "Connections closed by the server, by close code.", []string{"listener", "code"}, nil)
	descRefused       = prometheus.NewDesc("tslm_upgrades_refused_total", "WebSocket upgrades and event streams refused with an HTTP status, by reason: subprotocol, token, origin, max_connections_per_ip, max_connections, shutdown, unauthorized.", []string{"listener", "reason"}, nil)
	descErrors        = prometheus.NewDesc("tslm_errors_total", "Error frames sent, by error code.", []string{"listener", "code"}, nil)
	descAuth          = prometheus.NewDesc("tslm_auth_total", "Credentials checked (upgrade headers, auth frames, HTTP API requests), by result: ok or refused.", []string{"listener", "result"}, nil)
	descBudget        = prometheus.NewDesc("tslm_send_budget_bytes", "Bytes queued for the clients of both listeners (state used) against TSLM_SEND_QUEUE_BUDGET (state limit).", []string{"state"}, nil)

	descPublished      = prometheus.NewDesc("tslm_messages_published_total", "Messages this replica appended to the backlog for its clients, by path: api (HTTP API) or websocket (publish frames, both listeners). Idempotent retries are not counted; publishers' direct XADDs cannot be told apart in Redis: see tslm_messages_read_total.", []string{"path"}, nil)
	descRead           = prometheus.NewDesc("tslm_messages_read_total", "Entries this replica's readers took from the backlog for live delivery, whoever appended them (a gateway or a publisher's XADD), once per replica following the channel; session inboxes excluded.", nil, nil)
	descFullReads      = prometheus.NewDesc("tslm_reader_full_reads_total", "Channel batches that came back holding TSLM_READ_BATCH entries: the reader was at least that far behind, and read again at once.", nil, nil)
	descReaderLag      = prometheus.NewDesc("tslm_reader_lag_seconds", "For each batch a reader took from the backlog, how long its first entry had waited there: the gateway's clock minus the entry ID's time (Redis's clock).", nil, nil)
	descReplayMessages = prometheus.NewDesc("tslm_replay_messages", "Messages each replay sent before going live or ending, for subscriptions with since or last.", nil, nil)
	descPublishToWrite = prometheus.NewDesc("tslm_publish_to_write_seconds", "For each live message written to a client, the time from its publication (its ID's time: Redis's clock) to its write to the socket (the gateway's clock); replays excluded.", []string{"listener"}, nil)
	descQueueFill      = prometheus.NewDesc("tslm_send_queue_fill_ratio", "Fill of every open connection's send queue at scrape time: the larger of its share of TSLM_SEND_QUEUE frames and of TSLM_SEND_QUEUE_BYTES; at 1 the next live message closes it as a slow consumer.", []string{"listener"}, nil)
	descSlowConsumers  = prometheus.NewDesc("tslm_slow_consumer_closes_total", "Connections and event streams closed as slow consumers (close code 4000).", []string{"listener"}, nil)
	descEnded          = prometheus.NewDesc("tslm_connections_closed_total", "Connections (transport ws) and event streams (sse) that ended, by close code and by whom: the server's code, the client's close frame's (1005: none given; other: a code outside RFC 6455's and TSLM's), or 1006 when the connection went without a close frame.", []string{"listener", "transport", "code", "by"}, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descChannels, descSubscriptions, descDelivered, descReplayBytes, descOverflows, descReplayRefused, descGaps, descReadErrors,
		descSessions, descPending, descReplies, descRefusals, descTimeouts, descDropped, descServings, descOpen, descAccepted, descStreams, descStreamsTotal, descCommands, descCloses, descRefused, descErrors, descAuth, descBudget,
		descPublished, descRead, descFullReads, descReaderLag, descReplayMessages, descPublishToWrite, descQueueFill, descSlowConsumers, descEnded} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	hs := c.hub.Stats()
	ch <- prometheus.MustNewConstMetric(descChannels, prometheus.GaugeValue, float64(hs.Channels))
	ch <- prometheus.MustNewConstMetric(descSubscriptions, prometheus.GaugeValue, float64(hs.Subscriptions))
	ch <- prometheus.MustNewConstMetric(descDelivered, prometheus.CounterValue, float64(hs.Delivered))
	ch <- prometheus.MustNewConstMetric(descReplayBytes, prometheus.GaugeValue, float64(hs.ReplayBytes))
	ch <- prometheus.MustNewConstMetric(descOverflows, prometheus.CounterValue, float64(hs.ReplayOverflows))
	ch <- prometheus.MustNewConstMetric(descReplayRefused, prometheus.CounterValue, float64(hs.ReplayRefused))
	ch <- prometheus.MustNewConstMetric(descGaps, prometheus.CounterValue, float64(hs.Gaps))
	ch <- prometheus.MustNewConstMetric(descReadErrors, prometheus.CounterValue, float64(hs.ReadErrors))
	ch <- prometheus.MustNewConstMetric(descSessions, prometheus.GaugeValue, float64(hs.Sessions))
	ch <- prometheus.MustNewConstMetric(descPending, prometheus.GaugeValue, float64(hs.RequestsPending))
	ch <- prometheus.MustNewConstMetric(descReplies, prometheus.CounterValue, float64(hs.Replies))
	ch <- prometheus.MustNewConstMetric(descRefusals, prometheus.CounterValue, float64(hs.Refusals))
	ch <- prometheus.MustNewConstMetric(descTimeouts, prometheus.CounterValue, float64(hs.Timeouts))
	ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(hs.RepliesDropped))
	ch <- prometheus.MustNewConstMetric(descServings, prometheus.GaugeValue, float64(hs.Servings))
	ch <- prometheus.MustNewConstMetric(descBudget, prometheus.GaugeValue, float64(c.budget.Used()), "used")
	ch <- prometheus.MustNewConstMetric(descBudget, prometheus.GaugeValue, float64(c.budget.Limit()), "limit")
	ch <- prometheus.MustNewConstMetric(descRead, prometheus.CounterValue, float64(hs.MessagesRead))
	ch <- prometheus.MustNewConstMetric(descFullReads, prometheus.CounterValue, float64(hs.FullReads))
	ch <- constHistogram(descReaderLag, hs.ReaderLag)
	ch <- constHistogram(descReplayMessages, hs.ReplayMessages)
	var wsPublished int64
	for name, srv := range c.servers {
		st := srv.Stats()
		wsPublished += st.Published
		ch <- constHistogram(descPublishToWrite, st.PublishToWrite, name)
		ch <- constHistogram(descQueueFill, st.QueueFill, name)
		ch <- prometheus.MustNewConstMetric(descSlowConsumers, prometheus.CounterValue, float64(st.Closes[ws.CodeSlowConsumer]), name)
		for end, n := range st.Ends {
			ch <- prometheus.MustNewConstMetric(descEnded, prometheus.CounterValue, float64(n), name, end.Transport, end.Code, end.By)
		}
		ch <- prometheus.MustNewConstMetric(descOpen, prometheus.GaugeValue, float64(st.Open), name)
		ch <- prometheus.MustNewConstMetric(descAccepted, prometheus.CounterValue, float64(st.Accepted), name)
		ch <- prometheus.MustNewConstMetric(descStreams, prometheus.GaugeValue, float64(st.Streams), name)
		ch <- prometheus.MustNewConstMetric(descStreamsTotal, prometheus.CounterValue, float64(st.StreamsAccepted), name)
		ch <- prometheus.MustNewConstMetric(descCommands, prometheus.CounterValue, float64(st.Commands), name)
		for code, n := range st.Closes {
			ch <- prometheus.MustNewConstMetric(descCloses, prometheus.CounterValue, float64(n), name, strconv.Itoa(code))
		}
		for reason, n := range st.Refused {
			ch <- prometheus.MustNewConstMetric(descRefused, prometheus.CounterValue, float64(n), name, reason)
		}
		for code, n := range st.Errors {
			ch <- prometheus.MustNewConstMetric(descErrors, prometheus.CounterValue, float64(n), name, string(code))
		}
		ok, refused := st.AuthOK, st.AuthRefused
		if name == "internal" && c.api != nil {
			as := c.api.Stats()
			ok, refused = ok+as.AuthOK, refused+as.AuthRefused
		}
		ch <- prometheus.MustNewConstMetric(descAuth, prometheus.CounterValue, float64(ok), name, "ok")
		ch <- prometheus.MustNewConstMetric(descAuth, prometheus.CounterValue, float64(refused), name, "refused")
	}
	ch <- prometheus.MustNewConstMetric(descPublished, prometheus.CounterValue, float64(wsPublished), "websocket")
	if c.api != nil {
		ch <- prometheus.MustNewConstMetric(descPublished, prometheus.CounterValue, float64(c.api.Stats().Published), "api")
	}
}

// constHistogram exposes a histogram snapshot.
func constHistogram(desc *prometheus.Desc, s histogram.Snapshot, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstHistogram(desc, s.Count(), s.Sum, s.Cumulative(), labels...)
}
