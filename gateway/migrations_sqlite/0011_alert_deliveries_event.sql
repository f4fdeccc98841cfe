-- A sink asks whether it has delivered an event already (its urgent and ordinary lanes, and
-- events delivered ahead of its cursor while earlier ones are held).
CREATE INDEX alert_deliveries_event ON alert_deliveries (sink, event_id);
