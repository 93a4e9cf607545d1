-- Personal documents (issue 17), one table per kind, all of one shape so that one piece of
-- replication code serves them (shared/store/src/replication/docs.rs): a user's item under a
-- key, its body, and its stamp. Replicated per item like roster items (docs/replication.md),
-- deleted with the account.
--
--   private_xml   XEP-0049 private XML storage: key `{namespace}name`, body the element
--   vcards        XEP-0054 vcard-temp: key '', body the <vCard/> element
--   last_activity XEP-0012 last logout: key '', body the unavailable presence's status text;
--                 the time is the stamp's (hlc >> 16 milliseconds), the same at every DC
CREATE TABLE private_xml (
    username  text   NOT NULL,
    key       text   NOT NULL,
    body      text   NOT NULL,
    hlc       bigint NOT NULL,
    hlc_dc    text   NOT NULL,
    PRIMARY KEY (username, key)
);

CREATE TABLE vcards (
    username  text   NOT NULL,
    key       text   NOT NULL DEFAULT '',
    body      text   NOT NULL,
    hlc       bigint NOT NULL,
    hlc_dc    text   NOT NULL,
    PRIMARY KEY (username, key)
);

CREATE TABLE last_activity (
    username  text   NOT NULL,
    key       text   NOT NULL DEFAULT '',
    body      text   NOT NULL,
    hlc       bigint NOT NULL,
    hlc_dc    text   NOT NULL,
    PRIMARY KEY (username, key)
);
