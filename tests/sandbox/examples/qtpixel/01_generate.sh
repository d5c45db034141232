curl -X POST https://pixel.qingchencloud.com/api/v1/generate \
  -H "Authorization: Bearer YOUR_API_KEY" \
  -H "Content-Type: application/json" \
  -d '{"prompt":"一只可爱的猫"}'
