/* api_help.c - the HTTP API reference printed by `producer --help` (see api.h). */
#include "api.h"

const char rq_api_help_text[] =
    "HTTP API (JSON; with API keys or JWKS_FILE every route but /health* and /metrics needs\n"
    "Authorization: Bearer <key or JWT>; the README has the details):\n"
    "  POST /produce                       one message; 201 once the broker confirmed it\n"
    "  POST /batch-produce                 {\"messages\": [...]}; 201 once all are confirmed\n"
    "       ?wait=true                     wait for the consumer's reply (200, or 504 queued)\n"
    "  GET  /messages/{id}                 status of a recent message (this producer)\n"
    "  GET  /dlq, POST /dlq/retry          the default queue's dead letters\n"
    "  POST /queues                        create {\"name\",\"type\",\"max_priority\",...}\n"
    "  GET  /queues, GET|DELETE /queues/{id}\n"
    "  POST /queues/{id}/messages          enqueue (one, or {\"messages\": [...]}); options per\n"
    "                                      message: priority, ttl_ms, delay_ms, headers; a\n"
    "                                      non-JSON Content-Type publishes the raw bytes\n"
    "  GET  /queues/{id}/messages?max=N&lease_s=S&wait_s=W\n"
    "                                      pull up to N messages, each leased for S seconds\n"
    "                                      (long-poll up to W s when the queue is empty)\n"
    "  POST /queues/{id}/messages/{msgId}/ack|nack|lease   settle or extend a lease\n"
    "                                      ({\"lease_id\": ...}); an expired lease returns\n"
    "                                      the message to the queue (at-least-once)\n"
    "  GET  /queues/{id}/dlq, POST /queues/{id}/messages/retry\n"
    "  GET  /health, /health/live, /health/ready, /metrics\n";
