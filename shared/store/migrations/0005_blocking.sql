-- XEP-0191 block lists: one row per (account, blocked JID). `jid` is a normalised bare JID,
-- full JID, domain or domain/resource. Replicated like roster items (docs/replication.md):
-- stamped rows, tombstones of kind 'block' keyed 'username\njid'.
CREATE TABLE blocked_jids (
    username  text   NOT NULL,
    jid       text   NOT NULL,
    hlc       bigint NOT NULL,
    hlc_dc    text   NOT NULL,
    PRIMARY KEY (username, jid)
);

-- Every change of a list, made here or applied from another DC, tells the DC's routers (which
-- cache the lists they enforce) whose list changed; delivered at commit.
CREATE FUNCTION blocked_jids_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('meerkat_blocking', OLD.username);
    ELSE
        PERFORM pg_notify('meerkat_blocking', NEW.username);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER blocked_jids_changed AFTER INSERT OR UPDATE OR DELETE ON blocked_jids
    FOR EACH ROW EXECUTE FUNCTION blocked_jids_notify();
