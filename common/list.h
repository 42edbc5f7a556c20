/* list.h - the intrusive doubly linked list of relayq (one push, one unlink).
 *
 * A node (rq_list_node_t) is embedded in the element; RQ_LIST_ENTRY() gets the element
 * back from its node, like the kernel's container_of. The list holds no memory of its own:
 * unlinking never frees. A node is in at most one list at a time; an unlinked node has both
 * links NULL. Not thread-safe: the owner of the list guards it. */
#ifndef RQ_LIST_H
#define RQ_LIST_H

#include <assert.h>
#include <stddef.h>

typedef struct rq_list_node {
    struct rq_list_node *prev, *next;
} rq_list_node_t;

typedef struct rq_list {
    rq_list_node_t *head, *tail;
} rq_list_t;

/* The element of type `type` whose member `member` is the node `node`. */
#define RQ_LIST_ENTRY(node, type, member) ((type *)(void *)((char *)(node)-offsetof(type, member)))

/* Appends n (unlinked) at the tail. */
static inline void rq_list_push_back(rq_list_t *l, rq_list_node_t *n)
{
    assert(n->prev == NULL && n->next == NULL && l->head != n);
    n->prev = l->tail;
    n->next = NULL;
    if (l->tail != NULL)
        l->tail->next = n;
    else
        l->head = n;
    l->tail = n;
}

/* Inserts n (unlinked) at the head. */
static inline void rq_list_push_front(rq_list_t *l, rq_list_node_t *n)
{
    assert(n->prev == NULL && n->next == NULL && l->head != n);
    n->next = l->head;
    n->prev = NULL;
    if (l->head != NULL)
        l->head->prev = n;
    else
        l->tail = n;
    l->head = n;
}

/* Takes n (in l) out of l; its links become NULL. */
static inline void rq_list_unlink(rq_list_t *l, rq_list_node_t *n)
{
    if (n->prev != NULL)
        n->prev->next = n->next;
    else
        l->head = n->next;
    if (n->next != NULL)
        n->next->prev = n->prev;
    else
        l->tail = n->prev;
    n->prev = n->next = NULL;
}

#endif
