const response = await fetch('https://pixel.qingchencloud.com/api/v1/generate', {
  method: 'POST',
  headers: {
    'Authorization': 'Bearer YOUR_API_KEY',
    'Content-Type': 'application/json'
  },
  body: JSON.stringify({ prompt: '一只可爱的猫' })
});
const data = await response.json();
console.log(data);
