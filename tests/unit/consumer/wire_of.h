/* wire_of.h - a delivery's decoded headers for the message tests (unit tests only). */
#ifndef RQ_TEST_WIRE_OF_H
#define RQ_TEST_WIRE_OF_H

#include <amqp.h>
#include <string.h>

#include "wire.h"

/* The decoded headers of a delivery that carries table t (NULL: no headers property): what
 * the consumer hands rq_message_decode(). w borrows t's entries. */
static const rq_wire_msg_t *wire_of(const amqp_table_t *t, rq_wire_msg_t *w)
{
    amqp_basic_properties_t p;

    if (t == NULL)
        return NULL;
    memset(&p, 0, sizeof(p));
    p._flags = AMQP_BASIC_HEADERS_FLAG;
    p.headers = *t;
    rq_wire_decode(&p, w, NULL);
    return w;
}

#endif
