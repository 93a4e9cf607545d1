-- PEP (XEP-0163, issue 17): every account's pubsub nodes and their items, and the entity
-- capabilities cache (XEP-0115). All three have the shape of the personal documents of 0006
-- (`username`, `key`, `body`, stamp) so that the same replication code serves them
-- (shared/store/src/replication/docs.rs): per item the larger stamp wins, a deletion is a
-- tombstone, the rows go with their account.
--
--   pep_nodes  key = the node's name, body = its configuration (JSON, router-defined)
--   pep_items  key = node || E'\n' || item id, body = the <item/> element as published;
--              `node` is derived from the key for the per-node queries
--   pep_caps   username always '' (no account owns it), key = '<hash>\n<ver>', body = the
--              verified disco#info features and identities, one per line. Content-addressed:
--              two DCs that verify the same ver write the same body, so they never conflict.
CREATE TABLE pep_nodes (
    username  text   NOT NULL,
    key       text   NOT NULL,
    body      text   NOT NULL,
    hlc       bigint NOT NULL,
    hlc_dc    text   NOT NULL,
    PRIMARY KEY (username, key)
);

CREATE TABLE pep_items (
    username  text   NOT NULL,
    key       text   NOT NULL,
    body      text   NOT NULL,
    hlc       bigint NOT NULL,
    hlc_dc    text   NOT NULL,
    node      text   GENERATED ALWAYS AS (split_part(key, E'\n', 1)) STORED,
    PRIMARY KEY (username, key)
);

-- The newest items of a node first (retrieval, max_items, the last published item).
CREATE INDEX pep_items_by_node ON pep_items (username, node, hlc DESC, hlc_dc DESC);

CREATE TABLE pep_caps (
    username  text   NOT NULL DEFAULT '',
    key       text   NOT NULL,
    body      text   NOT NULL,
    hlc       bigint NOT NULL,
    hlc_dc    text   NOT NULL,
    PRIMARY KEY (username, key)
);
