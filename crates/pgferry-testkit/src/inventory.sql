-- The sample inventory database of pgferry's demo: the seed migration's "inventory"
-- database in miniature. :scale multiplies every table.

CREATE TYPE order_status AS ENUM ('pending', 'paid', 'shipped', 'delivered', 'cancelled');

CREATE TABLE warehouses (
    id smallint PRIMARY KEY,
    code text NOT NULL UNIQUE,
    name text NOT NULL,
    timezone text NOT NULL
);

CREATE TABLE products (
    id bigserial PRIMARY KEY,
    sku text NOT NULL UNIQUE,
    name text NOT NULL,
    description text,
    price numeric(10, 2) NOT NULL CHECK (price >= 0),
    weight_grams integer,
    attributes jsonb NOT NULL DEFAULT '{}',
    tags text[] NOT NULL DEFAULT '{}',
    image_path text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz
);
CREATE INDEX products_attributes ON products USING gin (attributes);

CREATE TABLE stock_levels (
    product_id bigint NOT NULL REFERENCES products (id),
    warehouse_id smallint NOT NULL REFERENCES warehouses (id),
    quantity integer NOT NULL CHECK (quantity >= 0),
    reserved integer NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (product_id, warehouse_id)
);

CREATE TABLE customers (
    id bigserial PRIMARY KEY,
    email text NOT NULL UNIQUE,
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE orders (
    id bigserial PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers (id),
    status order_status NOT NULL DEFAULT 'pending',
    placed_at timestamptz NOT NULL DEFAULT now(),
    shipping_address jsonb,
    total numeric(12, 2) NOT NULL DEFAULT 0
);
CREATE INDEX orders_customer ON orders (customer_id);
CREATE INDEX orders_placed_at ON orders (placed_at);

CREATE TABLE order_lines (
    order_id bigint NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line_no integer NOT NULL,
    product_id bigint NOT NULL REFERENCES products (id),
    quantity integer NOT NULL CHECK (quantity > 0),
    unit_price numeric(10, 2) NOT NULL,
    line_total numeric(12, 2) GENERATED ALWAYS AS (quantity * unit_price) STORED,
    PRIMARY KEY (order_id, line_no)
);
CREATE INDEX order_lines_product ON order_lines (product_id);

CREATE VIEW low_stock AS
    SELECT p.sku, w.code AS warehouse, s.quantity
    FROM stock_levels s JOIN products p ON p.id = s.product_id
    JOIN warehouses w ON w.id = s.warehouse_id
    WHERE s.quantity - s.reserved < 5;

SELECT setseed(0.42);

INSERT INTO warehouses VALUES
    (1, 'IAD', 'Ashburn', 'America/New_York'),
    (2, 'PDX', 'Portland', 'America/Los_Angeles'),
    (3, 'FRA', 'Frankfurt', 'Europe/Berlin'),
    (4, 'NRT', 'Narita', 'Asia/Tokyo');

INSERT INTO products (sku, name, description, price, weight_grams, attributes, tags, image_path,
                      created_at)
SELECT format('SKU-%s', lpad(g::text, 8, '0')),
       initcap((ARRAY['steel', 'oak', 'linen', 'ceramic', 'copper'])[1 + g % 5]) || ' '
           || (ARRAY['bracket', 'lamp', 'towel', 'mug', 'hinge', 'shelf'])[1 + g % 6] || ' '
           || g,
       repeat('A sturdy, well-made item. ', 1 + g % 12),
       round((1 + random() * 499)::numeric, 2),
       50 + (g * 37) % 5000,
       jsonb_build_object('color', (ARRAY['red', 'blue', 'green', 'black'])[1 + g % 4],
                          'size', (ARRAY['S', 'M', 'L', 'XL'])[1 + g % 4],
                          'fragile', g % 9 = 0),
       ARRAY[(ARRAY['home', 'garden', 'kitchen', 'tools'])[1 + g % 4], 'catalog-' || g % 10],
       format('product-images/%s/%s.jpg', g % 100, g),
       timestamptz '2024-01-01' + g * interval '7 minutes'
FROM generate_series(1, 2000 * :scale) AS g;

INSERT INTO stock_levels (product_id, warehouse_id, quantity, reserved)
SELECT p.id, w.id, (random() * 500)::int, (random() * 3)::int
FROM products p CROSS JOIN warehouses w
WHERE (p.id + w.id) % 3 <> 0;

INSERT INTO customers (email, name, created_at)
SELECT format('customer%s@example.com', g), 'Customer ' || g,
       timestamptz '2023-06-01' + g * interval '13 minutes'
FROM generate_series(1, 1000 * :scale) AS g;

INSERT INTO orders (customer_id, status, placed_at, shipping_address)
SELECT 1 + (g::bigint * 7919) % (1000 * :scale),
       (ARRAY['pending', 'paid', 'shipped', 'delivered', 'cancelled']::order_status[])[1 + g % 5],
       timestamptz '2024-03-01' + g * interval '3 minutes',
       jsonb_build_object('city', (ARRAY['Berlin', 'Osaka', 'Austin', 'Lyon'])[1 + g % 4],
                          'zip', lpad((g % 99999)::text, 5, '0'))
FROM generate_series(1, 5000 * :scale) AS g;

INSERT INTO order_lines (order_id, line_no, product_id, quantity, unit_price)
SELECT o.id, l, 1 + (o.id * 31 + l * 17) % (2000 * :scale), 1 + (o.id + l) % 4,
       round((1 + random() * 99)::numeric, 2)
FROM orders o CROSS JOIN generate_series(1, 3) AS l
WHERE l <= 1 + o.id % 3;

UPDATE orders o SET total = s.total
FROM (SELECT order_id, sum(line_total) AS total FROM order_lines GROUP BY order_id) s
WHERE s.order_id = o.id;

ANALYZE;
